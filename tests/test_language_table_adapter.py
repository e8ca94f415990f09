"""The Language Table adapter alone: discovery, work units, episodes — no Beam."""

import os

import numpy as np
import pytest

from unisim.samples.fixtures import language_table as fixtures
from unisim.adapters import registry
from unisim.adapters.base import Episode
from unisim.adapters.language_table import LanguageTable, find_builder_dir
from unisim.schemas.dead_letter import Rejection


def test_source_may_be_the_builder_dir_or_its_parent(language_table_dir):
    parent = os.path.dirname(language_table_dir)
    assert find_builder_dir(parent) == language_table_dir
    assert find_builder_dir(language_table_dir + "/") == language_table_dir
    with pytest.raises(FileNotFoundError, match="neither a TFDS builder directory"):
        find_builder_dir(os.path.dirname(parent))


def test_discovery_works_on_a_non_local_filesystem(language_table_dir):
    # The tests' in-memory filesystem stands in for gs://, which has no directories either.
    fixtures.copy_tree(language_table_dir, "memory://rel/language_table/0.0.1")
    fixtures.copy_tree(language_table_dir, "memory://rel/language_table/0.0.2-beta")  # not a version: ignored
    assert find_builder_dir("memory://rel/language_table") == "memory://rel/language_table/0.0.1"


def test_work_units_are_the_tfrecord_files_and_episodes_read_back(language_table_dir):
    adapter = registry.get("language_table")(language_table_dir)
    assert isinstance(adapter, LanguageTable) and adapter.dataset_name == "language_table"
    units = adapter.work_units()
    assert units == ["train[0shard]", "train[1shard]"]
    items = [item for unit in units for item in adapter.read(unit)]
    assert len(items) == 5 and all(isinstance(i, Episode) for i in items)
    by_id = {e.episode_id: e for e in items}
    assert sorted(by_id) == [f"episode_{e:03d}" for e in range(5)]
    ep = by_id["episode_004"]
    assert ep.text == "push the block 4 to the left" and ep.fps == 10.0 and ep.split == "train"
    assert ep.controls.shape == (25, 2) and ep.controls.dtype == np.float32
    assert len(ep.frames) == 25 and ep.frames[0][:3] == b"\xff\xd8\xff"  # JPEG bytes, decoded later
    assert by_id["episode_003"].text == ""
    assert np.isnan(by_id["episode_001"].controls[7, 0])
    assert ep.source_file.startswith(language_table_dir) and ep.source_index >= 0
    # Reading is deterministic.
    assert [e.episode_id for e in adapter.read(units[0])] == [e.episode_id for e in adapter.read(units[0])]


def test_variants_are_named_after_their_builder(tmp_path):
    path = fixtures.write_language_table(str(tmp_path), num_episodes=1, steps=3, plant_defects=False,
                                         name="language_table_blocktoblock_sim", num_shards=1)
    adapter = LanguageTable(path)
    assert adapter.dataset_name == "language_table_blocktoblock_sim"
    (episode,) = list(adapter.read(adapter.work_units()[0]))
    assert isinstance(episode, Episode) and not isinstance(episode, Rejection)
    with pytest.raises(ValueError, match="split 'test'"):
        LanguageTable(path, split="test").work_units()


def test_language_table_passes_the_conformance_kit(language_table_dir, tmp_path):
    from unisim.pipelines.conformance import Expectation, check_adapter

    report = check_adapter(Expectation(
        dataset="language_table", source=language_table_dir, episodes=5, read_rejections={}, records=5,
        rejected_reasons={"empty_text": 1, "non_finite_control": 1, "undecodable_image": 2}), str(tmp_path))
    assert report.units == ["train[0shard]", "train[1shard]"] and len(report.episodes) == 5


def test_the_kit_catches_a_broken_expectation(language_table_dir, tmp_path):
    from unisim.pipelines.conformance import ConformanceError, Expectation, check_adapter

    with pytest.raises(ConformanceError, match=r"\[counts\] 5 episodes, expected 6"):
        check_adapter(Expectation(dataset="language_table", source=language_table_dir, episodes=6,
                                  read_rejections={}, records=5, rejected_reasons={}), str(tmp_path))


def test_the_kit_catches_an_adapter_that_repeats_a_key(language_table_dir, tmp_path):
    from unisim.pipelines.conformance import ConformanceError, Expectation, check_adapter

    @registry.register
    class RepeatingAdapter(LanguageTable):  # a plausible bug: the same episode id from two files
        name = "test_repeating_language_table"

        def read(self, unit):
            for item in super().read(unit):
                yield item
                if isinstance(item, Episode) and item.episode_id == "episode_000":
                    yield item

    with pytest.raises(ConformanceError, match=r"\[unique keys\] episode ids repeat: \['episode_000'\]"):
        check_adapter(Expectation(dataset="test_repeating_language_table", source=language_table_dir, episodes=5,
                                  read_rejections={}, records=5, rejected_reasons={}), str(tmp_path))
