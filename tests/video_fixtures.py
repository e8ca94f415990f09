"""Human-activity video datasets in their official layouts, with real encoded videos and planted bad items."""

from __future__ import annotations

import json
import os

import numpy as np

from unisim.fileio.video import write_video


def frames(seed: int, count: int, height: int, width: int) -> list[np.ndarray]:
    """A bright square moving over a gradient; frame t's mean brightness rises with t (tests read it back)."""
    out = []
    for t in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
        frame[..., 1] = (30 * seed) % 200
        frame[..., 2] = min(255, 8 * t)
        x = (5 * t) % max(1, width - 16)
        frame[height // 3 : height // 3 + 16, x : x + 16] = 255
        out.append(frame)
    return out


def truncate(path: str, keep: float = 0.6) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


# ---------------------------------------------------------------------------------------------------- SSv2
# (split, id, label, frames, defect). 12 fps webm, 240 px high as released (narrower here to stay small).
SSV2 = [
    ("train", "100", "Holding potato next to vicks vaporub bottle", 30, None),
    ("train", "101", "Pushing cup from left to right", 20, None),
    ("train", "102", "Dropping pen onto table", 20, "missing_video"),
    ("train", "103", "Putting book on shelf", 40, "truncated_video"),
    ("train", "104", None, 20, "malformed_row"),
    ("train", "105", "", 20, None),  # empty label
    ("validation", "200", "Opening drawer", 16, None),
]
# 100: 2 clips; 101: 2; 103: decodes part of its 40 frames, so some of its 3 clips fail; 105: empty_text; 200: 1.
SSV2_EXPECT = dict(episodes=5, read_rejections={"malformed_annotation": 1, "missing_video": 1})


def write_ssv2(root: str, label_layout: str = "labels") -> str:
    video_dir = os.path.join(root, "20bn-something-something-v2")
    os.makedirs(video_dir, exist_ok=True)
    labels: dict[str, list] = {"train": [], "validation": []}
    for seed, (split, vid, label, count, defect) in enumerate(SSV2):
        if defect == "malformed_row":
            labels[split].append({"id": vid, "template": "Something"})
            continue
        template = label.replace("potato", "[something]") if label else ""
        labels[split].append({"id": vid, "label": label, "template": template, "placeholders": []})
        if defect == "missing_video":
            continue
        path = write_video(os.path.join(video_dir, f"{vid}.webm"), frames(seed, count, 240, 320), 12, "vp9")
        if defect == "truncated_video":
            truncate(path)
    for split, entries in labels.items():
        name = f"labels/{split}.json" if label_layout == "labels" else f"something-something-v2-{split}.json"
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            json.dump(entries, f)
    return root


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


# --------------------------------------------------------------------------------------------------- Ego4D
# video_uid → (codec, frames at 30 fps, defect); "d4" has narrations but no video, "e5" a malformed entry.
EGO4D_VIDEOS = {"a1": ("h264", 90, None), "b2": ("mpeg4", 60, None), "c3": ("h264", 90, "truncated_video")}


def _narrations(uid, *items):
    """One annotator's pass as the release writes it: every narration and summary carries the pass's uid."""
    return {"narrations": [{"timestamp_sec": t, "timestamp_frame": round(t * 30) if isinstance(t, float) else t,
                            "narration_text": text, "annotation_uid": uid} for t, text in items],
            "summaries": [{"start_sec": 0.0, "end_sec": 3.0, "summary_text": "#Summary C cooks",
                           "annotation_uid": uid}]}


EGO4D_NARRATIONS = {
    "a1": {"narration_pass_1": _narrations("u-a1-1", (0.5, "#C C picks up a knife"), (1.5, "#C C cuts #unsure"),
                                           (2.9, "#O man X opens the door"),
                                           (5.0, "#C C drops the knife"),  # past the 3 s video
                                           ("abc", "#C C waves"),  # malformed timestamp
                                           (1.5, "#C  C cuts #unsure")),  # the second one again: duplicate
           "narration_pass_2": _narrations("u-a1-2", (1.0, "#C C holds a knife"), (2.0, "#unsure")),  # empty
           "status": "complete"},
    # Two passes of 5 and 3 narrations, each pass under one annotation_uid: all 8 are kept.
    "b2": {"narration_pass_1": _narrations("u-b2-1", (0.2, "#C C opens the fridge"), (0.6, "#C C takes milk"),
                                           (1.0, "#C C closes the fridge"), (1.4, "#C C opens the milk"),
                                           (1.8, "#C C pours milk")),
           "narration_pass_2": _narrations("u-b2-2", (0.3, "#C C opens the fridge"),
                                           (1.2, "#C C closes the fridge"), (1.7, "#C C pours the milk"))},
    "c3": {"narration_pass_1": _narrations("u-c3-1", (0.2, "#C C lifts a cup"), (2.5, "#C C drinks"))},
    "d4": {"narration_pass_1": _narrations("u-d4-1", (1.0, "#C C walks"))},  # no video
    "e5": ["not", "an", "object"],
}
EGO4D_ANNOTATIONS = 20  # narrations, plus e5's entry
# a1-3 near the end is shifted inside; c3 is cut (faststart MP4): c3-1 early decodes, c3-2 is past the cut.
EGO4D_EXPECT = dict(episodes=15, read_rejections={"malformed_annotation": 2, "timestamp_out_of_range": 1,
                                                   "missing_video": 1, "duplicate_annotation": 1},
                    records=13, rejected_reasons={"duplicate_annotation": 1, "empty_text": 1,
                                                  "malformed_annotation": 2, "missing_video": 1,
                                                  "timestamp_out_of_range": 1, "truncated_video": 1})


def write_ego4d(root: str) -> str:
    _write_json(os.path.join(root, "v1/annotations/narration.json"), EGO4D_NARRATIONS)
    os.makedirs(os.path.join(root, "v1/full_scale"), exist_ok=True)
    for seed, (uid, (codec, count, defect)) in enumerate(EGO4D_VIDEOS.items()):
        path = write_video(os.path.join(root, f"v1/full_scale/{uid}.mp4"), frames(seed, count, 96, 160), 30, codec,
                           keyframe_seconds=0.5, faststart=defect == "truncated_video")
        if defect == "truncated_video":
            truncate(path)
    return root


# -------------------------------------------------------------------------------------------- EPIC-KITCHENS
EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
               "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")
# (split, narration_id, start, stop, start_frame, stop_frame, narration); media per video below.
EPIC_ROWS = [
    ("train", "P01_01_0", "00:00:00.20", "00:00:00.80", 10, 40, "open drawer"),
    ("train", "P01_01_1", "00:00:01.00", "00:00:01.90", 50, 95, "take spoon"),
    ("train", "P01_01_2", "00:00:05.00", "00:00:06.00", 250, 300, "close drawer"),  # past the 2 s video
    ("train", "P01_01_3", "00:00:00.50", "00:00:01.50", 25, 75, ""),  # empty narration
    ("train", "P01_02_0", "00:00:00.08", "00:00:00.50", 5, 30, "wash plate"),  # extracted frames
    ("train", "P01_02_1", "00:00:00.67", "00:00:00.97", 40, 58, "dry plate"),
    ("train", "P02_01_0", "00:00:00.10", "00:00:00.50", 5, 25, "pour water"),  # truncated MP4
    ("train", "P02_02_0", "00:00:00.10", "00:00:00.50", 5, 25, "stir pot"),  # no media at all
    ("train", "P03_01_0", "00:00:00.10", "00:00:00.50", 6, 30, "cut onion"),  # frames, but no video_info row
    ("train", "P01_01_5", "00:00:00.10", "00:00:00.50", "abc", 25, "peel potato"),  # malformed frame number
    ("train", "P01_01_6", "00:00:01.50", "00:00:02.30", 75, 115, "put spoon"),  # 0.3 s past the end: cut, counted
    ("train", "P01_01_7", "00:00:01.50", "00:00:04.40", 75, 220, "wipe counter"),  # 2.4 s past: rejected
    ("validation", "P01_01_4", "00:00:00.30", "00:00:01.10", 15, 55, "close drawer"),
    # Frame numbers at twice start_timestamp × fps (59.94 in the video info), as for some high-frame-rate videos
    # of the release: P04_01's 120 frame files follow the numbering, P04_02's 60 follow the video's rate.
    ("train", "P04_01_0", "00:00:00.30", "00:00:00.60", 36, 72, "rinse cup"),
    ("train", "P04_01_1", "00:00:00.50", "00:00:00.70", 60, 84, "dry cup"),
    ("train", "P04_02_0", "00:00:00.30", "00:00:00.60", 36, 72, "fill kettle"),
]
EPIC_ANNOTATIONS = len(EPIC_ROWS) + 1  # and one row with missing fields
EPIC_EXPECT = dict(episodes=10, read_rejections={"malformed_annotation": 2, "missing_video": 1,
                                                  "missing_video_info": 1, "span_past_video_end": 1,
                                                  "timestamp_out_of_range": 1, "truncated_video": 1},
                   records=9, rejected_reasons={"empty_text": 1, "malformed_annotation": 2, "missing_video": 1,
                                                "missing_video_info": 1, "span_past_video_end": 1,
                                                "timestamp_out_of_range": 1, "truncated_video": 1},
                   altered={"span_end_clamped": 1})


def write_epic(root: str) -> str:
    import csv

    rows = {"train": [], "validation": []}
    for split, nid, start, stop, first, last, text in EPIC_ROWS:
        participant, video_id = nid.split("_")[0], nid.rsplit("_", 1)[0]
        verb, noun = (text.split(" ", 1) + ["", ""])[:2] if text else ("", "")
        rows[split].append([nid, participant, video_id, start, start, stop, first, last, text, verb, 0, noun, 0,
                            str([noun, "bin"]), "[0, 1]"])
    rows["train"].append(["P01_01_9", "P01", "P01_01", "00:00:00.10"])  # a line cut short
    for split, lines in rows.items():
        with open(os.path.join(root, f"EPIC_100_{split}.csv"), "w", newline="") as f:
            if split == "validation":  # with the leading uid column the release's README documents
                f.write("uid," + EPIC_HEADER + "\n")
                lines = [[4972 + i, *line] for i, line in enumerate(lines)]
            else:
                f.write(EPIC_HEADER + "\n")
            csv.writer(f).writerows(lines)
    with open(os.path.join(root, "EPIC_100_video_info.csv"), "w") as f:
        f.write("video_id,duration,fps,resolution\nP01_01,2.0,50.0,160x96\nP01_02,1.001,59.94,160x96\n"
                "P02_01,2.0,50.0,160x96\nP04_01,1.0,59.94,160x96\nP04_02,1.0,59.94,160x96\n")
    os.makedirs(os.path.join(root, "P01/videos"))
    write_video(os.path.join(root, "P01/videos/P01_01.MP4"), frames(1, 100, 96, 160), 50, "h264", keyframe_seconds=0.5)
    os.makedirs(os.path.join(root, "P02/videos"))
    truncate(write_video(os.path.join(root, "P02/videos/P02_01.MP4"), frames(2, 100, 96, 160), 50, "h264"))
    import cv2

    for participant, video_id, count in (("P01", "P01_02", 60), ("P03", "P03_01", 40), ("P04", "P04_01", 120),
                                         ("P04", "P04_02", 60)):
        folder = os.path.join(root, participant, "rgb_frames", video_id)
        os.makedirs(folder)
        for t, image in enumerate(frames(3, count, 96, 160), 1):
            cv2.imwrite(os.path.join(folder, f"frame_{t:010d}.jpg"), image[..., ::-1])
    return root


# ------------------------------------------------------------------------------------------ video_captions
# (id, video, caption, start, end)
CAPTION_ROWS = [
    ("c1", "clips/v1.mp4", "a dog runs", "0.0", "1.0"),
    ("c2", "clips/v1.mp4", "the dog sits", "00:00:01.0", "00:00:02.0"),
    ("c3", "clips/v2.webm", "waves roll in", "", ""),  # the whole video
    ("c4", "clips/gone.mp4", "a cat sleeps", "0", "1"),  # missing video
    ("c5", "clips/v1.mp4", "backwards", "1.5", "0.5"),  # end before start
    ("c1", "clips/v1.mp4", "a dog runs again", "0.0", "1.0"),  # an id reused for another caption: kept as c1@5
    ("c6", "clips/v1.mp4", "", "0.0", "1.0"),  # empty caption
    ("c8", "clips/v1.mp4", "the dog sits", "1", "2.000"),  # c2 again, times written otherwise: duplicate
]
CAPTION_ANNOTATIONS = len(CAPTION_ROWS) + 1  # and one malformed line
CAPTION_EXPECT = dict(episodes=5, read_rejections={"duplicate_annotation": 1, "malformed_annotation": 2,
                                                    "missing_video": 1},
                      records=4, rejected_reasons={"duplicate_annotation": 1, "empty_text": 1,
                                                   "malformed_annotation": 2, "missing_video": 1})


def write_video_captions(root: str, table_format: str = "csv") -> str:
    """The videos under root/clips and the table as root/captions.{csv,jsonl,parquet}; returns the table path."""
    os.makedirs(os.path.join(root, "clips"), exist_ok=True)
    write_video(os.path.join(root, "clips/v1.mp4"), frames(4, 60, 96, 160), 30, "h264")
    write_video(os.path.join(root, "clips/v2.webm"), frames(5, 48, 96, 160), 24, "vp9")
    names = ("id", "video", "caption", "start", "end")
    path = os.path.join(root, f"captions.{table_format}")
    if table_format == "csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            writer.writerows(CAPTION_ROWS)
            f.write("c7,clips/v1.mp4\n")  # a line cut short
    elif table_format == "jsonl":
        with open(path, "w") as f:
            for row in CAPTION_ROWS:
                f.write(json.dumps(dict(zip(names, row))) + "\n")
            f.write('{"id": "c7", "video": "clips/v1.mp4", "capt\n')  # a line cut short
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [dict(zip(names, row)) for row in CAPTION_ROWS] + [{"id": "c7", "video": None, "caption": None,
                                                                  "start": None, "end": None}]
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path
