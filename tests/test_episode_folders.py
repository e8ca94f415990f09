"""The episode_folders adapter (the template adapter): its fixture in the official layout, the conformance kit,
option checking, and reading through a non-local filesystem."""

import json

import numpy as np
import pytest

from unisim.samples.fixtures import episode_folders as ef
from unisim.samples.fixtures.language_table import copy_tree
from unisim.adapters import registry
from unisim.adapters.base import Episode
from unisim.schemas.dead_letter import Rejection

OPTIONS = ef.OPTIONS


@pytest.fixture
def fixture_dir(tmp_path) -> str:
    return ef.write_fixture(str(tmp_path / "episode_folders"))


def test_episode_folders_passes_the_conformance_kit(fixture_dir, tmp_path):
    from unisim.pipelines.conformance import Expectation, check_adapter

    report = check_adapter(Expectation(
        dataset="episode_folders", source=fixture_dir, options=OPTIONS,
        # The adapter yields train/ep_000–003, ep_005 and val/ep_000, and rejects the other five whole.
        episodes=6,
        read_rejections={"malformed_metadata": 2, "invalid_text_encoding": 1, "malformed_controls": 1,
                         "missing_images": 1},
        # 30 frames → 2 clips each: ep_000 writes 2; ep_001, ep_002 and ep_003 lose one clip each (the gap at 20
        # is in clip 1, the cut JPEG at 5 in clip 0, the NaN at 25 in clip 1); ep_005 loses both (empty text);
        # val/ep_000 has 10 frames → 1 clip.
        records=6,
        rejected_reasons={"malformed_metadata": 2, "invalid_text_encoding": 1, "malformed_controls": 1,
                          "missing_images": 1, "missing_image": 1, "truncated_image": 1, "non_finite_control": 1,
                          "empty_text": 1}), str(tmp_path))
    assert report.units == [f"{fixture_dir}/train/ep_{e:03d}" for e in range(10)] + [f"{fixture_dir}/val/ep_000"]
    assert [e.episode_id for e in report.episodes] == ["train/ep_000", "train/ep_001", "train/ep_002",
                                                       "train/ep_003", "train/ep_005", "val/ep_000"]
    reasons = {r.key: r.reason for r in report.rejections}
    assert reasons == {"train/ep_004": "malformed_metadata", "train/ep_006": "invalid_text_encoding",
                       "train/ep_007": "malformed_controls", "train/ep_008": "missing_images",
                       "train/ep_009": "malformed_metadata"}
    assert report.manifest.source_episodes == 11


def test_episodes_read_back(fixture_dir):
    adapter = registry.create("episode_folders", fixture_dir, "val", OPTIONS)
    assert adapter.control_names == ("dx", "dy") and adapter.requires_text
    assert adapter.work_units() == [f"{fixture_dir}/val/ep_000"]
    (episode,) = adapter.read(adapter.work_units()[0])
    assert isinstance(episode, Episode) and episode.split == "val" and episode.fps == 10.0
    assert episode.controls.shape == (10, 2) and episode.controls.dtype == np.float32
    assert episode.frames[3] == ef.image(10, 3, "png")
    gap = registry.create("episode_folders", fixture_dir, "train", OPTIONS)
    (episode,) = gap.read(f"{fixture_dir}/train/ep_001")
    assert len(episode.frames) == ef.FRAMES and episode.frames[20] == b""  # → missing_image for that frame's clips
    (rejection,) = gap.read(f"{fixture_dir}/train/ep_007")
    assert isinstance(rejection, Rejection) and "[29, 2], expected [30, 2]" in rejection.detail
    assert registry.create("episode_folders", fixture_dir, options={"require_text": "false"}).requires_text is False


def test_an_unknown_option_is_a_clear_error(fixture_dir):
    with pytest.raises(ValueError, match=r"episode_folders: unknown adapter option\(s\) camera; "
                                         r"its options: control_names, require_text"):
        registry.create("episode_folders", fixture_dir, options={"camera": "1"})
    with pytest.raises(ValueError, match="require_text: expected true or false"):
        registry.create("episode_folders", fixture_dir, options={"require_text": "maybe"})


def test_a_missing_source_or_split_is_a_clear_error(fixture_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registry.create("episode_folders", fixture_dir + "/nowhere").work_units()
    with pytest.raises(FileNotFoundError, match="no episode folders .* in split 'test'"):
        registry.create("episode_folders", fixture_dir, "test").work_units()


def test_reading_works_on_a_non_local_filesystem(fixture_dir, tmp_path):
    # The tests' in-memory filesystem stands in for gs:// (`tests/memfs.py`).
    remote = copy_tree(fixture_dir, f"memory://{tmp_path.name}/episode_folders")

    def read_all(root):
        adapter = registry.create("episode_folders", root, options=OPTIONS)
        units = adapter.work_units()
        return [unit[len(root):] for unit in units], [item for unit in units for item in adapter.read(unit)]

    local_units, local_items = read_all(fixture_dir)
    remote_units, remote_items = read_all(remote)
    assert remote_units == local_units and len(remote_units) == 11
    label = lambda i: (type(i).__name__, i.episode_id if isinstance(i, Episode) else (i.key, i.reason))  # noqa: E731
    assert [label(i) for i in remote_items] == [label(i) for i in local_items]
    for here, there in zip(local_items, remote_items):
        if isinstance(here, Episode):
            assert there.source_file.startswith("memory://") and there.text == here.text
            np.testing.assert_array_equal(there.controls, here.controls)
            assert list(there.frames) == list(here.frames)  # every frame's bytes, gaps (b"") included


def test_one_frame_rate_written_two_ways_is_one_rate_in_the_manifest(tmp_path, capsys):
    """59.94 (as a CSV writes it) and 60000/1001 (as a container states it) differ by 1e-6: one rate; 29.97 and
    30 differ by 1e-3: two. `inspect --json` shows the distinct rates."""
    from unisim.cli import main
    from unisim.pipelines import convert
    from unisim.schemas.manifest import merge_frame_rates

    assert merge_frame_rates({59.94: 1, 60000 / 1001: 1}) == [59.94]
    assert merge_frame_rates({59.94: 1, 60000 / 1001: 3, 29.97: 2, 30.0: 2}) == [29.97, 30.0, 60000 / 1001]
    root = str(tmp_path / "rates")
    for name, fps in (("a", 59.94), ("b", 60000 / 1001)):
        actions = np.zeros((ef.FRAMES, 2)).tolist()
        ef.write_episode(f"{root}/train/{name}", 0, metadata=json.dumps(
            {"instruction": "wave", "fps": fps, "actions": actions}).encode())
    output = str(tmp_path / "out")
    manifest, _ = convert.run(convert.ConvertConfig(dataset="episode_folders", source=root, output=output,
                                                    adapter_options=OPTIONS), command="test")
    assert manifest.records == 4 and manifest.fps == 59.94 and manifest.fps_values == [59.94]
    assert main(["inspect", output, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fps"] == 59.94 and summary["fps_values"] == [59.94]
