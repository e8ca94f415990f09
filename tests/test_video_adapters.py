"""Video decoding (adapters/video.py) and the human-activity video adapters on fixtures with real encoded videos."""

import json
import os
import pickle

import numpy as np
import pytest

from unisim.samples.fixtures import videos as vf
from unisim import fileio
from unisim.adapters import registry, video
from unisim.adapters.base import Episode, FrameUnavailable
from unisim.pipelines import inspect
from unisim.shards import reader
from unisim.pipelines.frames import FrameSpec, process
from unisim.pipelines.conformance import Expectation, check_adapter
from unisim.fileio.video import write_video


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> str:
    """60 frames of H.264 at 30 fps with a keyframe every 10 frames; frame t's blue channel is 8·t."""
    path = str(tmp_path_factory.mktemp("videos") / "clip.mp4")
    return write_video(path, vf.frames(1, 60, 64, 96), 30, "h264", keyframe_seconds=1 / 3)


def _blue(image: np.ndarray) -> float:
    return float(image[-12:, :, 2].mean())  # below the moving square


def test_frames_decode_in_order_and_windows_seek_to_the_exact_frame(clip_path):
    info = video.probe(clip_path)
    assert info == video.VideoInfo(fps=30.0, frames=60, height=64, width=96)
    whole = video.VideoFrames(clip_path, 0, 60)
    blues = [_blue(whole[i]) for i in range(0, 60, 3)]  # skipping frames, as a lower --fps does
    assert np.allclose(blues, [min(255, 8 * t) for t in range(0, 60, 3)], atol=3)
    window = video.VideoFrames(clip_path, 25, 10)  # starts between keyframes: seek, then decode forward
    assert len(window) == 10 and abs(_blue(window[0]) - 200) < 3 and abs(_blue(window[2]) - 216) < 3
    assert abs(_blue(window[1]) - 208) < 3  # going back reopens
    with pytest.raises(IndexError):
        window[10]
    copy = pickle.loads(pickle.dumps(window))  # the window travels, the decoder does not
    assert np.array_equal(copy[3], window[3])


def test_a_video_cut_short_fails_only_past_its_end(clip_path, tmp_path):
    short = str(tmp_path / "short.webm")
    write_video(short, vf.frames(2, 40, 64, 96), 12, "vp9")
    vf.truncate(short)
    frames = video.VideoFrames(short, 0, video.probe(short).frames)
    assert _blue(frames[0]) < 3
    with pytest.raises(FrameUnavailable) as caught:
        for i in range(len(frames)):
            frames[i]
    assert caught.value.reason == "truncated_video" and 0 < i < 40
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    assert video.probe(str(garbage)) is None


def test_remote_videos_are_copied_to_scratch_once_and_removed(clip_path):
    remote, other = "memory://videos/clip.mp4", "memory://videos/other.mp4"
    for path in (remote, other):
        fileio.publish(open(clip_path, "rb").read(), path)
    assert video.probe(remote) == video.probe(clip_path)
    local = video.COPIES._copies[remote][0]  # kept after probing, for the window that follows
    far, near = video.VideoFrames(remote, 5, 3), video.VideoFrames(clip_path, 5, 3)
    assert np.array_equal(far[0], near[0]) and video.COPIES._copies[remote] == (local, 1)  # the same copy
    far[1], far[2]  # the last frame parks the decoder (and its copy) for a later window on the same video
    assert video.COPIES._copies[remote] == (local, 1) and video.PARKED._slot[0] == remote
    near[2]  # parking another decoder releases this one; its copy is idle, kept until another falls idle
    assert video.COPIES._copies[remote] == (local, 0) and os.path.exists(local)
    video.PARKED.drop()
    video.probe(other)
    assert remote not in video.COPIES._copies and not os.path.exists(local)
    video.COPIES.clear()
    assert not video.COPIES._copies


def test_a_later_window_on_the_same_video_decodes_on_from_the_parked_decoder(clip_path):
    video.PARKED.drop()
    first = video.VideoFrames(clip_path, 5, 3)
    first[0], first[2]  # the last frame parks it after frame 7
    parked = video.PARKED._slot[1]
    later = video.VideoFrames(clip_path, 20, 3)  # 12 frames on: decoding forward beats reopening
    assert abs(_blue(later[0]) - 160) < 3 and later._capture is parked
    later[2]
    parked = video.PARKED._slot[1]
    behind = video.VideoFrames(clip_path, 10, 2)  # before the parked position: reopens and seeks
    assert abs(_blue(behind[0]) - 80) < 3 and behind._capture is not parked and video.PARKED._slot[1] is parked
    behind[1]
    far = video.VideoFrames(clip_path, 59, 1)  # more than FORWARD_SECONDS past frame 11 (parked by behind)
    assert abs(_blue(far[0]) - 255) < 3
    video.PARKED.drop()


def assert_one_clip_per_annotation(report, annotations: int) -> None:
    """`inspect`'s clip count is the annotation count minus the rejected, and each record is its annotation's."""
    summary = inspect.summarize(report.output)
    assert summary["records"] == annotations - report.manifest.rejected
    records = list(reader.iter_records(report.output, report.manifest))
    assert all(r.clip_index == 0 for r in records) and len({r.episode_id for r in records}) == len(records)


def test_ssv2_passes_the_kit(tmp_path):
    root = vf.write_ssv2(str(tmp_path / "ssv2"))
    # One clip per labelled video, centred, at the source 12 fps: 100, 101 and 200 are written; 103 decodes 19 of
    # its 40 frames and its centred clip needs frames 8-27; 105 has an empty label.
    report = check_adapter(Expectation(
        dataset="ssv2", source=root, records=3,
        rejected_reasons={"empty_text": 1, "malformed_annotation": 1, "missing_video": 1, "truncated_video": 1},
        **vf.SSV2_EXPECT), str(tmp_path))
    assert report.units == ["train:0", "validation:0"]
    assert_one_clip_per_annotation(report, annotations=len(vf.SSV2))
    by_id = {e.episode_id: e for e in report.episodes}
    assert by_id["train/100"].text == "Holding potato next to vicks vaporub bottle"
    assert by_id["train/100"].fps == 12.0 and by_id["validation/200"].split == "validation"
    assert by_id["train/100"].span == (0, 30)


def test_ssv2_reads_the_older_release_naming(tmp_path):
    root = vf.write_ssv2(str(tmp_path / "ssv2"), label_layout="old")
    adapter = registry.create("ssv2", root, split="validation")
    (episode,) = [i for u in adapter.work_units() for i in adapter.read(u)]
    assert isinstance(episode, Episode) and episode.episode_id == "validation/200" and len(episode.frames) == 16
    with pytest.raises(ValueError, match="the test split has no labels"):
        registry.create("ssv2", root, split="test")
    with pytest.raises(FileNotFoundError, match="no label files"):
        registry.create("ssv2", str(tmp_path)).work_units()


def _records(report) -> dict:
    return {r.episode_id: r for r in reader.iter_records(report.output, report.manifest)}


def test_ego4d_gives_one_clip_per_narration_centred_on_its_moment(tmp_path):
    root = vf.write_ego4d(str(tmp_path / "ego4d"))
    expect = dict(vf.EGO4D_EXPECT)
    report = check_adapter(Expectation(dataset="ego4d", source=root, **expect), str(tmp_path))
    assert [unit.split("@")[0] for unit in report.units] == ["a1", "b2", "c3", "d4", "e5"]
    assert_one_clip_per_annotation(report, annotations=vf.EGO4D_ANNOTATIONS)
    by_id = {e.episode_id: e for e in report.episodes}
    # Narrations of a video come in time order, both passes merged, so its decoder only moves forward.
    assert [e.episode_id for e in report.episodes if e.episode_id.startswith("a1/")] == [
        "a1/pass1/0", "a1/pass2/0", "a1/pass1/1", "a1/pass2/1", "a1/pass1/2"]
    assert by_id["a1/pass1/1"].text == "The camera wearer cuts something"
    assert by_id["a1/pass1/2"].text == "Man X opens the door" and by_id["a1/pass2/1"].text == ""
    assert by_id["a1/pass1/1"].span == (45, 46) and by_id["a1/pass1/1"].fps == 30.0
    # annotation_uid names a whole pass (shared by its narrations), so it deduplicates nothing: 5 + 3 kept.
    assert sorted(k for k in by_id if k.startswith("b2/")) == [f"b2/pass1/{i}" for i in range(5)] + [
        f"b2/pass2/{i}" for i in range(3)]
    records = _records(report)
    # 1.5 s at 30 fps = frame 45: 16 targets centred there, 4 history frames before them.
    assert records["a1/pass1/1"].frame_indices.tolist() == list(range(33, 53))
    assert records["a1/pass1/1"].context_frames == 4
    assert records["a1/pass1/2"].frame_indices.tolist()[-1] == 89  # 2.9 s: shifted to end with the video
    assert records["b2/pass2/0"].text == "The camera wearer opens the fridge"  # MPEG-4 Part 2 video
    reasons = {r.key: r.reason for r in report.dead_letter}
    assert reasons["c3/pass1/1/00000"] == "truncated_video" and "c3/pass1/0" in records  # early narration kept
    assert reasons["a1/pass1/3"] == "timestamp_out_of_range" and reasons["e5"] == "malformed_annotation"
    # The same time and text twice (whitespace aside) is one narration: the repeat is rejected, naming the first.
    duplicate = next(r for r in report.dead_letter if r.reason == "duplicate_annotation")
    assert duplicate.key == "a1/pass1/5" and "a1/pass1/1" in duplicate.detail
    # A record's frame is the source frame it names, decoded and encoded as the pipeline does.
    expected = process(video.VideoFrames(f"{root}/v1/full_scale/a1.mp4", 0, 90)[45], FrameSpec())
    assert records["a1/pass1/1"].frames[12] == expected
    # Three clip threads (windows of one video share a thread and its decoder): the same shards and dead letter.
    from unisim.pipelines import convert

    again = str(tmp_path / "threads")
    convert.run(convert.ConvertConfig(dataset="ego4d", source=root, output=again), clip_threads=3, command="test")
    assert _files_but_manifest(again) == _files_but_manifest(report.output)


def _files_but_manifest(folder: str) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if name != "manifest.json"}


def test_ego4d_work_units_are_byte_ranges_that_parse_alone():
    from unisim.adapters.ego4d import entry_ranges

    data = {"v1": {"narration_pass_1": {"narrations": [{"narration_text": "#C C pèle une pomme — ☕"}]}},
            "v2": [1, {"a": "}"}], "v3": "x"}
    for text in (json.dumps(data), json.dumps(data, ensure_ascii=False, indent=2)):
        raw = text.encode("utf-8")
        ranges = entry_ranges(raw)
        assert [key for key, _, _ in ranges] == ["v1", "v2", "v3"]
        assert [json.loads(raw[start:end]) for _, start, end in ranges] == list(data.values())
    for broken in (b'{"v1": {"a": 1}, "v2": ', b'["not", "an object"]', b'{"v1": 1 "v2": 2}'):
        with pytest.raises(ValueError, match="ego4d: the narration file is not"):
            entry_ranges(broken)


def test_ego4d_options_select_passes_and_reject_bad_values(tmp_path):
    root = vf.write_ego4d(str(tmp_path / "ego4d"))
    adapter = registry.create("ego4d", root, options={"passes": "2", "camera_wearer": "I"})
    items = [i for u in adapter.work_units() for i in adapter.read(u)]
    texts = sorted(i.text for i in items if isinstance(i, Episode))
    assert texts == ["", "I closes the fridge", "I holds a knife", "I opens the fridge", "I pours the milk"]
    with pytest.raises(ValueError, match="passes must be"):
        registry.create("ego4d", root, options={"passes": "3"})
    with pytest.raises(FileNotFoundError, match="download root that holds v1/"):
        registry.create("ego4d", str(tmp_path)).work_units()


def test_epic_kitchens_reads_videos_and_extracted_frames(tmp_path):
    root = str(tmp_path / "epic")
    os.makedirs(root)
    vf.write_epic(root)
    report = check_adapter(Expectation(dataset="epic_kitchens", source=root, **vf.EPIC_EXPECT), str(tmp_path))
    assert report.units == ["train:", "train:P01_01", "train:P01_02", "train:P02_01", "train:P02_02",
                            "train:P03_01", "train:P04_01", "train:P04_02", "validation:P01_01"]
    assert_one_clip_per_annotation(report, annotations=vf.EPIC_ANNOTATIONS)
    by_id = {e.episode_id: e for e in report.episodes}
    assert by_id["P01_01_1"].fps == 50.0 and by_id["P01_01_1"].span == (50, 96)  # 1.00-1.90 s at 50 fps
    assert by_id["P01_02_0"].fps == 59.94 and len(by_id["P01_02_0"].frames) == 60  # from EPIC_100_video_info.csv
    assert by_id["P01_02_0"].span == (4, 30)  # frame_0000000005.jpg is index 4
    records = _records(report)
    assert records["P01_02_0"].frame_indices.tolist() == list(range(5, 25))
    assert records["P01_01_0"].text == "open drawer" and records["P01_01_4"].split == "validation"
    details = {r.key: r.detail for r in report.dead_letter}
    assert "'moov') is missing" in details["P02_01_0"] and "rgb_frames/P02_02" in details["P02_02_0"]
    # Frame numbers twice start_timestamp × fps: P04_01's files follow the numbering (120 in 1 s), so segments are
    # placed by frame number at 119.88 fps; P04_02's follow the video (60), so by timestamp at 59.94.
    assert by_id["P04_01_0"].span == (35, 72) and len(by_id["P04_01_0"].frames) == 120
    assert abs(by_id["P04_01_0"].fps - 119.88) < 1e-9
    assert by_id["P04_02_0"].span == (18, 36) and by_id["P04_02_0"].fps == 59.94
    assert report.manifest.adapter["frame_numbering"] == {
        "P04_01": {"ratio": 2.002, "placed_by": "frame_numbers", "frame_rate": 119.88, "files": 120},
        "P04_02": {"ratio": 2.002, "placed_by": "timestamps", "frame_rate": 59.94, "files": 60}}


def test_epic_kitchens_fits_the_clip_to_the_segment_when_asked(tmp_path):
    from unisim.pipelines import convert

    root = str(tmp_path / "epic")
    os.makedirs(root)
    vf.write_epic(root)
    manifest, _ = convert.run(convert.ConvertConfig(dataset="epic_kitchens", source=root, split="validation",
                                                    output=str(tmp_path / "out"), fit_spans=True), command="test")
    (record,) = reader.iter_records(str(tmp_path / "out"), manifest)
    # 0.30-1.10 s at 50 fps = frames [15, 56): 16 targets 2.5625 frames apart cover it.
    assert record.frame_indices[4] == 15 and record.frame_indices[-1] == 53
    assert abs(record.fps - 50 / (41 / 16)) < 1e-3 and manifest.fps_values == [record.fps]


@pytest.mark.parametrize("table_format", ["csv", "jsonl", "parquet"])
def test_video_captions_reads_each_table_format(tmp_path, table_format):
    table = vf.write_video_captions(str(tmp_path / "captions"), table_format)
    adapter = registry.create("video_captions", table)
    items = [i for u in adapter.work_units() for i in adapter.read(u)]
    episodes = [i for i in items if isinstance(i, Episode)]
    assert [e.episode_id for e in episodes] == ["c1", "c2", "c3", "c1@5", "c6"]
    assert episodes[1].span == (30, 60) and episodes[2].span == (0, 48) and episodes[2].fps == 24.0
    assert episodes[3].text == "a dog runs again"  # an id is not assumed unique: a second caption is kept
    reasons = sorted((i.key, i.reason) for i in items if not isinstance(i, Episode))
    assert reasons == sorted([("c4", "missing_video"), ("c5", "malformed_annotation"),
                              ("c7" if table_format == "parquet" else "row000000008", "malformed_annotation"),
                              ("c8", "duplicate_annotation")])


def test_video_captions_passes_the_kit_from_a_non_local_filesystem(tmp_path):
    table = vf.write_video_captions(str(tmp_path / "captions"))
    remote = "memory://captions-kit"
    for name in ("captions.csv", "clips/v1.mp4", "clips/v2.webm"):
        fileio.publish(open(os.path.join(os.path.dirname(table), name), "rb").read(), f"{remote}/{name}")
    report = check_adapter(Expectation(dataset="video_captions", source=f"{remote}/captions.csv",
                                       **vf.CAPTION_EXPECT), str(tmp_path))
    assert_one_clip_per_annotation(report, annotations=vf.CAPTION_ANNOTATIONS)
    assert report.manifest.adapter["columns"] == {"video": "video", "caption": "caption", "start": "start",
                                                   "end": "end", "id": "id"}
    with pytest.raises(ValueError, match="no caption column"):
        registry.create("video_captions", _table_without_captions(tmp_path)).work_units()


def _table_without_captions(tmp_path) -> str:
    path = str(tmp_path / "bad.csv")
    with open(path, "w") as f:
        f.write("video,label\nclips/v1.mp4,x\n")
    return path

