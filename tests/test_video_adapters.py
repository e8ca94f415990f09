"""Video decoding (adapters/video.py) and the human-activity video adapters on fixtures with real encoded videos."""

import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import video_fixtures as vf
from unisim.adapters import registry, video
from unisim.adapters.base import Episode, FrameUnavailable
from unisim.pipelines import inspect
from unisim.pipelines.conformance import Expectation, check_adapter
from unisim.samples.video_writer import write_video


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
    remote, other = "ram://videos/clip.mp4", "ram://videos/other.mp4"
    tf.io.gfile.copy(clip_path, remote, overwrite=True)
    tf.io.gfile.copy(clip_path, other, overwrite=True)
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
    records = list(inspect.iter_records(report.output, report.manifest))
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
