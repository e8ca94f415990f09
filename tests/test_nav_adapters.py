"""The navigation adapters (r2r, habitat_objectnav) on fixtures in their official layouts with planted bad items."""

import math

import numpy as np
import pytest

from unisim.samples.fixtures import navigation as nf
from unisim.samples.fixtures.language_table import copy_tree
from unisim.adapters import panorama, registry
from unisim.shards import reader
from unisim.pipelines.conformance import Expectation, check_adapter


def test_r2r_passes_the_kit(tmp_path):
    root = nf.write_r2r(str(tmp_path / "r2r"))
    report = check_adapter(Expectation(dataset="r2r", source=root, **nf.R2R_EXPECT), str(tmp_path))
    by_id = {e.episode_id: e for e in report.episodes}
    path = by_id["train/path/1/0"]
    assert path.text == "Walk to the kitchen and stop." and len(path.frames) == 3
    # p0 (0,0) → p1 (0,2) → p2 (2,2): start heading 0.5 rad, then north (0), then east (π/2). Displacements are
    # in the heading of the frame they leave: p1 → p2 is 2 m to the right of a camera facing north.
    np.testing.assert_allclose(path.controls[:, 0], [2 * math.cos(0.5), 0, 0], atol=1e-5)
    np.testing.assert_allclose(path.controls[:, 1], [-2 * math.sin(0.5), 2, 0], atol=1e-5)
    np.testing.assert_allclose(path.controls[:, 3], [-0.5, math.pi / 2, 0], atol=1e-5)
    right = by_id[f"train/scanA/{nf.PANOS['p1']}/right"]
    assert right.text == "turn right 30 degrees" and len(right.frames) == 12
    np.testing.assert_allclose(right.controls[:-1, 3], math.radians(30), atol=1e-5)
    up = by_id[f"train/scanA/{nf.PANOS['p1']}/up"]
    np.testing.assert_allclose(up.controls[:-1, 4], math.radians(30), atol=1e-5)
    assert right.frames[0].shape == (240, 400, 3)
    reasons = {r.key: r.reason for r in report.dead_letter}
    assert reasons["train/path/2/0"] == "unknown_viewpoint" and reasons["train/path/3/2"] == "missing_skybox"
    assert reasons["train/path/5/1"] == "missing_connectivity" and reasons["train@3"] == "malformed_annotation"
    records = list(reader.iter_records(report.output, report.manifest))
    assert {r.episode_id for r in records} == set(by_id)
    assert report.manifest.control_stats is not None


def test_a_view_is_the_projection_of_the_skybox_it_names(tmp_path):
    root = nf.write_r2r(str(tmp_path / "r2r"))
    adapter = registry.create("r2r", root, options={"view_height": 30, "view_width": 50})
    episodes = {e.episode_id: e for e in adapter.read("train:scanA") if hasattr(e, "frames")}
    path = episodes["train/path/1/1"]
    folder = f"{root}/data/v1/scans/scanA/matterport_skybox_images"
    import cv2

    faces = {i: cv2.cvtColor(cv2.imread(f"{folder}/{nf.PANOS['p1']}_skybox{i}_sami.jpg"), cv2.COLOR_BGR2RGB)
             for i in range(6)}
    pose = np.asarray(nf.pose(17.0, 0.0, 2.0)).reshape(4, 4)
    expected = panorama.render_view(faces.__getitem__, pose, 0.0, 0.0, 30, 50, math.radians(60))
    np.testing.assert_array_equal(path.frames[1], expected)  # frame 1: at p1, facing north (travel p0 → p1)


def test_r2r_passes_the_kit_from_a_non_local_filesystem(tmp_path):
    remote = copy_tree(nf.write_r2r(str(tmp_path / "r2r")), "memory://r2r-kit")
    check_adapter(Expectation(dataset="r2r", source=remote, **nf.R2R_EXPECT), str(tmp_path))


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown direction"):
        registry.create("r2r", "/nowhere", options={"directions": "right,sideways"})
    with pytest.raises(ValueError, match="split must be one of"):
        registry.create("r2r", "/nowhere", split="test")


def test_habitat_objectnav_passes_the_kit(tmp_path):
    root = nf.write_habitat(str(tmp_path / "habitat"))
    report = check_adapter(Expectation(dataset="habitat_objectnav", source=root, **nf.HABITAT_EXPECT),
                           str(tmp_path))
    by_id = {e.episode_id: e for e in report.episodes}
    chair = by_id["train/sceneA/0"]
    assert chair.text == "find a chair" and by_id["train/sceneA/1"].text == "find a tv monitor"
    # Row t: the action after observation t (replay entry t + 1), one-hot; the last row is empty.
    assert chair.controls.argmax(axis=1)[:4].tolist() == [0, 1, 0, 5] and not chair.controls[4].any()
    reasons = {r.key: r.reason for r in report.dead_letter}
    assert reasons["train/sceneA/2"] == "unknown_action" and reasons["train/sceneA/4"] == "observation_count_mismatch"
    assert reasons["train/sceneA/1/00000"] == "undecodable_image"
    records = {r.episode_id: r for r in reader.iter_records(report.output, report.manifest)}
    assert records["train/sceneB/6"].conditioning_text.startswith("habitat_objectnav")  # the domain identifier
    remote = copy_tree(root, "memory://habitat-kit")
    check_adapter(Expectation(dataset="habitat_objectnav", source=remote, **nf.HABITAT_EXPECT), str(tmp_path / "r"))
