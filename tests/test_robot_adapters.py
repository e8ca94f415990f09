"""RT-1, BridgeData V2 (raw and RLDS) and generic RLDS: fixtures in the official layouts, through the conformance
kit."""

import os

import numpy as np
import pytest

from unisim.samples.fixtures import language_table as fixtures
from unisim.samples.fixtures import robots as rf
from unisim.adapters import registry
from unisim.adapters.base import Episode
from unisim.pipelines.conformance import Expectation, check_adapter
from unisim.schemas.dead_letter import Rejection


@pytest.fixture(scope="module")
def rt1_dir(tmp_path_factory) -> str:
    return rf.write_rt1(str(tmp_path_factory.mktemp("rt1_release")))


@pytest.fixture(scope="module")
def bridge_raw(tmp_path_factory) -> tuple[str, str]:
    marker_dir = str(tmp_path_factory.mktemp("marker"))
    return rf.write_bridge_raw(str(tmp_path_factory.mktemp("bridge_raw")), marker_dir), marker_dir


def _items(adapter) -> list:
    return [item for unit in adapter.work_units() for item in adapter.read(unit)]


def test_rt1_passes_the_kit(rt1_dir, tmp_path):
    report = check_adapter(Expectation(dataset="rt1", source=os.path.dirname(rt1_dir), **rf.RT1_EXPECT), str(tmp_path))
    assert report.manifest.dataset == "rt1" and report.units == ["train[0shard]", "train[1shard]"]
    assert list(report.manifest.control_stats.names) == [
        "world_x", "world_y", "world_z", "rotation_roll", "rotation_pitch", "rotation_yaw", "gripper_closedness",
        "base_x", "base_y", "base_yaw"]
    first = next(e for e in report.episodes if e.text == "pick coke can")
    assert first.fps == 3.0 and first.controls.shape == (16, 10) and len(first.frames) == 16


def test_rt1_controls_are_the_continuous_action_fields_in_the_documented_order(rt1_dir):
    adapter = registry.create("rt1", rt1_dir)
    episode = next(i for i in _items(adapter) if isinstance(i, Episode) and i.text == "close middle drawer")
    rng = np.random.default_rng(4)  # replay the fixture's draws up to that episode
    rows = [rf.rt1_action(rng, t) for steps, _, _ in rf.RT1_EPISODES for t in range(steps)]
    offset = sum(steps for steps, _, _ in rf.RT1_EPISODES[:5])
    expected = np.stack([np.concatenate([rows[offset + t][k] for k in ("world_vector", "rotation_delta",
                                                                        "gripper_closedness_action",
                                                                        "base_displacement_vector",
                                                                        "base_displacement_vertical_rotation")])
                         for t in range(24)])
    np.testing.assert_array_equal(episode.controls, expected)


def test_generic_rlds_with_a_mapping_reads_rt1_like_the_rt1_adapter(rt1_dir):
    fields = ("world_vector", "rotation_delta", "gripper_closedness_action", "base_displacement_vector",
              "base_displacement_vertical_rotation")
    generic = registry.create("rlds", rt1_dir, options={"fps": "3", "actions": ",".join(f"action/{f}" for f in fields)})
    assert generic.mapping.image == "observation/image"  # the only camera
    assert generic.mapping.text == "observation/natural_language_instruction"  # guessed
    assert generic.control_names[:3] == ("world_vector_0", "world_vector_1", "world_vector_2")
    assert generic.dataset_name == "fractal20220817_data"
    mine, theirs = _items(generic), _items(registry.create("rt1", rt1_dir))
    assert [e.episode_id for e in mine] == [e.episode_id for e in theirs]
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(a.controls, b.controls)
        assert a.text == b.text and a.frames == b.frames


def test_generic_rlds_errors_name_what_the_dataset_has(rt1_dir):
    with pytest.raises(ValueError, match="RLDS does not record the control rate"):
        registry.create("rlds", rt1_dir)
    with pytest.raises(ValueError, match=r"(?s)'action' is not a numeric step feature; it is a dict: list its fields "
                                         r"\(action/base_displacement_vector.*observation/image: Image\[256, 320, 3\]"):
        registry.create("rlds", rt1_dir, options={"fps": 3, "actions": "action"})
    guessed = registry.create("rlds", rt1_dir, options={"fps": 3})  # an action dict: its numeric fields by name
    assert guessed.mapping.actions == tuple(f"action/{f}" for f in (
        "base_displacement_vector", "base_displacement_vertical_rotation", "gripper_closedness_action",
        "rotation_delta", "terminate_episode", "world_vector"))
    with pytest.raises(ValueError, match="image 'observation/wrist' is not an image step feature"):
        registry.create("rlds", rt1_dir,
                        options={"fps": 3, "image": "observation/wrist", "actions": "action/world_vector"})
    with pytest.raises(ValueError, match="unknown adapter option.*camera; its options: actions, episode_id, fps"):
        registry.create("rlds", rt1_dir, options={"camera": 1})
    with pytest.raises(ValueError, match="rlds option fps: expected float, got 'fast'"):
        registry.create("rlds", rt1_dir, options={"fps": "fast"})


def test_generic_rlds_passes_the_kit_with_per_episode_text(tmp_path):
    source = rf.write_toy_oxe(str(tmp_path / "release"))
    options = {"fps": 10, "episode_id": "episode_metadata/episode_id"}
    report = check_adapter(Expectation(dataset="rlds", source=source, options=options, **rf.TOY_EXPECT),
                           str(tmp_path))
    # The id feature is unique within a split only: keys carry the split, so val's toy-0000 is not train's.
    assert sorted(e.episode_id for e in report.episodes) == ["train/toy-0000", "train/toy-0001", "train/toy-0002",
                                                             "train/toy-0003", "val/toy-0000", "val/toy-0001"]
    assert {e.text for e in report.episodes} == {"pour water into the cup", "wipe the plate", "hang the towel",
                                                 "fold the cloth", "stack the cups", "open the box"}
    assert report.manifest.dataset == "toy_oxe" and report.manifest.options["adapter_options"] == options
    assert list(report.manifest.control_stats.names) == ["action_0", "action_1", "action_2", "action_3"]


def test_bridge_rlds_passes_the_kit(tmp_path):
    source = rf.write_bridge_rlds(str(tmp_path / "release"))
    report = check_adapter(Expectation(dataset="bridge", source=source, **rf.BRIDGE_RLDS_EXPECT), str(tmp_path))
    assert report.manifest.dataset == "bridge" and report.manifest.fps == 5.0
    assert "" in {e.text for e in report.episodes}  # the unlabelled episode is kept…
    with pytest.raises(ValueError, match="camera must be 0–3"):
        registry.create("bridge", source, options={"camera": 4})
    strict = _items(registry.create("bridge", source, options={"require_text": "true"}))
    assert registry.create("bridge", source, options={"require_text": "true"}).requires_text and len(strict) == 5


def test_bridge_raw_passes_the_kit_and_never_runs_a_pickle(bridge_raw, tmp_path):
    root, marker_dir = bridge_raw
    report = check_adapter(Expectation(dataset="bridge", source=root, **rf.BRIDGE_RAW_EXPECT), str(tmp_path))
    assert not os.path.exists(os.path.join(marker_dir, rf.PAYLOAD_MARKER))
    unsafe = next(r for r in report.rejections if r.reason == "unsafe_pickle")
    assert unsafe.key == f"{rf.RAW_2023}/traj_group0/traj1".replace("/raw/", "/")
    assert "posix.system" in unsafe.detail and "nothing was imported or run" in unsafe.detail
    assert not any("lmdb" in u for u in report.units) and len(report.units) == 7


def test_bridge_raw_pairs_images_with_actions_as_the_official_script(bridge_raw):
    root, _ = bridge_raw
    items = {i.episode_id: i for i in _items(registry.create("bridge", root)) if isinstance(i, Episode)}
    clean = items["datacol2_toykitchen7/drawer_pnp/01/2023-04-19_09-18-15/traj_group0/traj0"]
    assert clean.text == "put the spoon in the drawer" and clean.fps == 5.0 and len(clean.frames) == 16
    with open(os.path.join(root, rf.RAW_2023, "traj_group0/traj0/images0/im_0.jpg"), "rb") as f:
        assert clean.frames[0] == f.read()
    old = items["bridge_data_v1/toykitchen1/put_corn_in_pot/00/2021-06-01_10-00-00/traj_group0/traj0"]
    assert old.text == "" and len(old.frames) == 16  # 18 images, 17 actions, shifted by one step
    with open(os.path.join(root, rf.RAW_2021, "traj_group0/traj0/images0/im_1.jpg"), "rb") as f:
        assert old.frames[0] == f.read()  # image t+1 goes with action t before 2021-07-23
    gap = items["datacol2_toykitchen7/drawer_pnp/01/2023-04-19_09-18-15/traj_group0/traj2"]
    assert gap.frames[7] == b"" and gap.frames[8] != b""


def test_bridge_raw_reads_through_a_non_local_filesystem(bridge_raw):
    root, _ = bridge_raw
    remote = fixtures.copy_tree(root, "memory://bridge-raw-copy")
    local, far = _items(registry.create("bridge", root)), _items(registry.create("bridge", remote))
    assert [(type(i).__name__, getattr(i, "episode_id", getattr(i, "key", None))) for i in far] == \
           [(type(i).__name__, getattr(i, "episode_id", getattr(i, "key", None))) for i in local]
    for a, b in zip(local, far):
        if isinstance(a, Episode):
            assert list(a.frames) == list(b.frames) and b.source_file.startswith(remote)
        else:
            assert isinstance(b, Rejection) and a.reason == b.reason


def test_bridge_source_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registry.create("bridge", str(tmp_path / "nowhere")).work_units()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither an RLDS bridge_dataset"):
        registry.create("bridge", str(tmp_path / "empty")).work_units()
    with pytest.raises(ValueError, match="raw folders have no splits"):
        registry.create("bridge", str(tmp_path / "empty"), split="val")


@pytest.mark.parametrize("dataset", ["rt1", "bridge", "rlds"])
def test_unisim_convert_converts_each_fixture(dataset, rt1_dir, bridge_raw, tmp_path, capsys):
    from unisim import cli
    from unisim.schemas.manifest import Manifest

    args = {"rt1": ["--source", rt1_dir], "bridge": ["--source", bridge_raw[0]],
            "rlds": ["--source", rf.write_toy_oxe(str(tmp_path / "release")), "--adapter_config",
                     str(tmp_path / "mapping.json"), "--adapter_option", "fps=10"]}[dataset]
    (tmp_path / "mapping.json").write_text('{"fps": 2, "episode_id": "episode_metadata/episode_id"}')
    output = str(tmp_path / "out")
    assert cli.main(["convert", "--dataset", dataset, *args, "--output", output]) == 0
    expect = {"rt1": rf.RT1_EXPECT, "bridge": rf.BRIDGE_RAW_EXPECT, "rlds": rf.TOY_EXPECT}[dataset]
    manifest = Manifest.loads(open(os.path.join(output, "manifest.json")).read())
    assert manifest.records == expect["records"] and manifest.rejected_reasons == expect["rejected_reasons"]
    out = capsys.readouterr().out
    noun = "record" if expect["records"] == 1 else "records"  # "1 record", not "1 records"
    assert f"→ {expect['records']} {noun} in" in out
    if dataset == "rlds":  # the command line overrides the file
        assert manifest.options["adapter_options"] == {"fps": "10", "episode_id": "episode_metadata/episode_id"}
        assert manifest.fps == 10.0
        assert manifest.adapter["mapping"] == {"image": "observation/image", "actions": ["action"], "fps": 10.0,
                                               "text": "episode_metadata/language_instruction",
                                               "episode_id": "episode_metadata/episode_id", "control_names": []}
        assert "read: image observation/image, text episode_metadata/language_instruction" in out
    if dataset == "bridge":
        assert manifest.adapter["release"] == "raw" and manifest.adapter["options"] == {"camera": 0,
                                                                                       "require_text": False}


def test_adapter_option_errors_are_clear(tmp_path, capsys):
    from unisim import cli

    assert cli.main(["convert", "--dataset", "rlds", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                     "--adapter_option", "fps"]) == 2
    assert "--adapter_option 'fps': expected KEY=VALUE" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert cli.main(["convert", "--dataset", "rlds", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                     "--adapter_config", str(tmp_path / "bad.json")]) == 2
    assert "expected a JSON object of options" in capsys.readouterr().err
