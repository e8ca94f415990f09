import dataclasses

import cv2
import numpy as np
import pytest

from unisim.schemas import record as rec


def _jpeg(value: int, h: int = 8, w: int = 12) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def make_record(**overrides) -> rec.ClipRecord:
    n = overrides.pop("n", 5)
    fields = dict(dataset="toy", episode_id="ep/7", clip_index=3, frames=[_jpeg(10 * i) for i in range(n)],
                  image_format="jpeg", height=8, width=12, fps=10.0, context_frames=2, text="push the red block left",
                  conditioning_text="toy: push the red block left controls: 0.10 0.20",
                  controls=np.arange(2 * n, dtype=np.float32).reshape(n, 2) / 10,
                  control_tokens=np.arange(2 * n, dtype=np.uint16).reshape(n, 2) * 100,
                  frame_indices=np.arange(n, dtype=np.int32) * 3, source_file="gs://b/x.tfrecord", source_index=4)
    fields.update(overrides)
    return rec.ClipRecord(**fields)


def test_round_trip_keeps_every_field_and_is_deterministic():
    record = make_record()
    data = rec.encode(record)
    assert data == rec.encode(make_record()), "same record must give the same bytes"
    back = rec.decode(data)
    for field in dataclasses.fields(rec.ClipRecord):
        a, b = getattr(record, field.name), getattr(back, field.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b, field.name
    assert back.key == "ep/7/00003" and back.target_frames == 3
    assert back.text_key == rec.text_key("toy: push the red block left controls: 0.10 0.20")
    assert len(back.text_key) == 32
    assert make_record(conditioning_text="").text_key == ""  # no text: the unconditional embedding
    frames = rec.decode_frames(back)
    assert frames.shape == (5, 8, 12, 3) and frames.dtype == np.uint8
    assert abs(int(frames[4].mean()) - 40) <= 2


def test_codec_needs_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from unisim.schemas import record, manifest, controls; "
            "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("overrides, field", [
    (dict(dataset=""), "dataset"),
    (dict(episode_id=""), "episode_id"),
    (dict(clip_index=-1), "clip_index"),
    (dict(context_frames=5), "context_frames"),
    (dict(frames=[]), "frames"),
    (dict(frames=[b"GIF89a"] * 5), "frames"),
    (dict(image_format="webp"), "image_format"),
    (dict(height=0), "height"),
    (dict(fps=float("nan")), "fps"),
    (dict(fps=0.0), "fps"),
    (dict(controls=np.zeros((4, 2), np.float32)), "controls"),
    (dict(controls=np.full((5, 2), np.nan, np.float32)), "controls"),
    (dict(controls=np.zeros((5, 2), np.float64)), "controls"),
    (dict(control_tokens=np.zeros((5, 3), np.uint16)), "control_tokens"),
    (dict(control_tokens=np.full((5, 2), 4096, np.uint16)), "control_tokens"),
    (dict(frame_indices=np.array([0, 3, 2, 4, 5], np.int32)), "frame_indices"),
    (dict(is_image=True), "is_image"),
    (dict(text=None), "text"),
    (dict(conditioning_text=b"toy"), "conditioning_text"),
])
def test_validation_names_the_bad_field(overrides, field):
    with pytest.raises(rec.RecordError) as err:
        rec.encode(make_record(**overrides))
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_single_image_record_is_valid():
    record = make_record(n=1, context_frames=0, is_image=True, fps=0.0)
    assert rec.decode(rec.encode(record)).is_image


def test_decode_rejects_foreign_truncated_and_future_bytes():
    data = rec.encode(make_record())
    with pytest.raises(rec.RecordError, match="magic"):
        rec.decode(b"XXXX" + data[4:])
    with pytest.raises(rec.RecordError) as err:
        rec.decode(data[: len(data) - 100])
    assert err.value.field == "frames"
    future = data.replace(b'"schema_version":%d' % rec.SCHEMA_VERSION, b'"schema_version":9')
    assert future != data
    with pytest.raises(rec.RecordError) as err:
        rec.decode(future)
    assert err.value.field == "schema_version"
    tampered = data.replace(b'"conditioning_text":"toy:', b'"conditioning_text":"toa:')
    with pytest.raises(rec.RecordError) as err:  # the stored text key no longer names this text
        rec.decode(tampered)
    assert err.value.field == "text_key"
