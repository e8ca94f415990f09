"""schemas/run.py: the run description round-trips, reads files written before it was versioned, and refuses
another version, a missing field or a wrong type with a message naming it."""

import json

import pytest

from unisim.schemas.controls import ControlStats
from unisim.schemas.run import RunDescription, RunDescriptionError, SourceDescription
from unisim.schemas.text_embeddings import EncoderIdentity


def _description() -> RunDescription:
    stats = ControlStats(names=("dx", "dy"), low=(-0.9, -0.9), high=(0.9, 0.9), low_percentile=1.0,
                         high_percentile=99.0, count=10, mean=(0.0, 0.0), std=(1.0, 1.0), min=(-1.0, -1.0),
                         max=(1.0, 1.0), percentile_rows=10)
    return RunDescription(config={"stage": "base", "input": {"frames": 16}}, text_dim=32, control_dims=2,
                          text_encoder=EncoderIdentity(fingerprint="abc", path="/t5", d_model=32, max_tokens=64),
                          sources=(SourceDescription("tabletop", "language_table", "/clips", 0.6, stats, (192, 320),
                                                     10.0),
                                   SourceDescription("images", "laion", "/images", 0.4, None, (192, 320), 0.0)))


def test_round_trip_and_controls_by_source():
    description = _description()
    back = RunDescription.loads(description.dumps())
    assert back == description
    assert list(back.controls()) == ["tabletop"] and back.controls()["tabletop"].names == ("dx", "dy")


def test_a_file_from_before_versions_is_version_1():
    data = json.loads(_description().dumps())
    del data["version"]
    assert RunDescription.loads(json.dumps(data)).version == 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=2), "has version 2"),
    (lambda d: d.pop("text_dim"), "missing field 'text_dim'"),
    (lambda d: d.update(control_dims="2"), "'control_dims' has the wrong type"),
    (lambda d: d["sources"][0].pop("frame_size"), "missing field 'frame_size'"),
    (lambda d: d.update(text_encoder=[1]), "text_encoder must be an object"),
])
def test_bad_files_are_refused_naming_what_is_wrong(change, message):
    data = json.loads(_description().dumps())
    change(data)
    with pytest.raises(RunDescriptionError, match=message):
        RunDescription.loads(json.dumps(data), "runs/base/run.json")
    with pytest.raises(RunDescriptionError, match="not JSON"):
        RunDescription.loads("{", "runs/base/run.json")
