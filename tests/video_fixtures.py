"""Human-activity video datasets in their official layouts, with real encoded videos and planted bad items."""

from __future__ import annotations

import json
import os

import numpy as np

from unisim.samples.video_writer import write_video


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
