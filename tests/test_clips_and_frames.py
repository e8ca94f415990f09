import cv2
import numpy as np
import pytest

from unisim.pipelines import clips, frames


def test_resample_30_to_10_fps_takes_every_third_frame():
    assert clips.resample_indices(10, 30.0, 10.0).tolist() == [0, 3, 6]
    idx = clips.resample_indices(90, 30.0, 10.0)
    assert idx.tolist() == list(range(0, 90, 3))
    assert clips.resample_indices(7, 10.0, None).tolist() == list(range(7))
    up = clips.resample_indices(5, 5.0, 10.0)
    assert up.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_clips_overlap_by_the_context_and_short_episodes_are_kept():
    plans = clips.plan_clips(np.arange(40, dtype=np.int32), frames_per_clip=20, context_frames=4)
    assert [p.context_frames for p in plans] == [0, 4, 4]
    assert [len(p.frame_indices) for p in plans] == [16, 20, 12]
    assert plans[1].frame_indices[:4].tolist() == [12, 13, 14, 15]
    assert plans[2].frame_indices.tolist() == list(range(28, 40))
    short = clips.plan_clips(np.arange(3, dtype=np.int32), frames_per_clip=20, context_frames=4)
    assert len(short) == 1 and short[0].frame_indices.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        clips.plan_clips(np.arange(3), frames_per_clip=4, context_frames=4)


def test_an_annotated_span_gives_one_clip_centred_at_the_target_rate_with_history_before_it():
    # A narration at frame 300 of a 30 fps, 900-frame video, clip at 10 fps: 16 targets 3 frames apart
    # centred on the span [300, 301), and 4 history frames before them at the same spacing.
    plan, fps = clips.plan_span_clip(900, 30.0, (300, 301), 10.0, frames_per_clip=20, context_frames=4)
    assert fps == 10.0 and plan.context_frames == 4 and plan.clip_index == 0
    assert plan.frame_indices.tolist() == list(range(264, 324, 3))
    # At the very start there is no history, and a clip that would run past the end moves inside the video.
    start, _ = clips.plan_span_clip(900, 30.0, (0, 10), 10.0, 20, 4)
    assert start.context_frames == 0 and start.frame_indices.tolist() == list(range(0, 48, 3))
    end, _ = clips.plan_span_clip(900, 30.0, (895, 900), 10.0, 20, 4)
    assert end.frame_indices[-1] == 897 and len(end.frame_indices) == 20
    # A video shorter than the clip gives what it has; the source rate is kept when no rate is asked for.
    short, fps = clips.plan_span_clip(10, 12.0, (0, 10), None, 20, 4)
    assert fps == 12.0 and short.frame_indices.tolist() == list(range(10)) and short.context_frames == 0


def test_fit_spreads_the_clip_over_the_span_and_spans_outside_the_video_are_refused():
    # EPIC-style segment [100, 196) at 50 fps: 16 targets 6 frames apart (8.33 fps) cover it exactly.
    plan, fps = clips.plan_span_clip(1000, 50.0, (100, 196), None, 20, 4, fit=True)
    assert plan.frame_indices.tolist() == list(range(76, 196, 6)) and abs(fps - 50 / 6) < 1e-9
    # Shorter than the clip: shown at the source rate, centred.
    plan, fps = clips.plan_span_clip(1000, 50.0, (100, 108), None, 20, 4, fit=True)
    assert fps == 50.0 and plan.frame_indices[4:].tolist() == list(range(96, 112))
    for span in ((-1, 5), (5, 5), (990, 1001)):
        with pytest.raises(ValueError, match="not inside"):
            clips.plan_span_clip(1000, 50.0, span, 10.0, 20, 4)


def test_resize_keeps_aspect_then_crops_or_pads_to_the_stored_size():
    image = np.zeros((360, 640, 3), np.uint8)
    image[:, :320] = 255  # left half white
    cropped = frames.resize(image, frames.FrameSpec(height=192, width=320, fit="crop"))
    assert cropped.shape == (192, 320, 3)
    # 360x640 scaled to cover 192x320 is 192x341: 10 columns cut on each side, so the edge sits at 160.
    assert cropped[:, 150].min() == 255 and cropped[:, 170].max() == 0
    padded = frames.resize(image, frames.FrameSpec(height=192, width=320, fit="pad"))
    assert padded.shape == (192, 320, 3)
    assert padded[:5].max() == 0 and padded[-5:].max() == 0  # 180 rows of image, 6 black rows top and bottom
    assert padded[100, 10].min() == 255


def test_process_encodes_jpeg_and_png_and_rejects_garbage():
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8)
    jpeg = frames.process(cv2.imencode(".png", image)[1].tobytes(), frames.FrameSpec(height=24, width=40))
    assert jpeg[:3] == b"\xff\xd8\xff"
    png = frames.process(image, frames.FrameSpec(height=24, width=40, image_format="png"))
    assert png[:4] == b"\x89PNG"
    with pytest.raises(frames.FrameError):
        frames.process(b"\xff\xd8\xff\xe0 not really", frames.FrameSpec())
    with pytest.raises(frames.FrameError):
        frames.process(np.zeros((4, 4, 4), np.uint8), frames.FrameSpec())


def test_unusable_frames_carry_the_reason_the_dead_letter_counts():
    image = np.random.default_rng(1).integers(0, 255, (48, 80, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    cases = {b"": "missing_image", jpeg[: len(jpeg) * 2 // 3]: "truncated_image",
             b"\xff\xd8\xff\xe0 complete but garbage \xff\xd9": "undecodable_image", b"GIF89a": "undecodable_image"}
    for data, reason in cases.items():
        with pytest.raises(frames.FrameError) as caught:
            frames.decode_rgb(data)
        assert caught.value.reason == reason, data[:12]
    assert frames.decode_rgb(jpeg + b"\x00" * 16).shape == (48, 80, 3)  # padding after EOI is tolerated
