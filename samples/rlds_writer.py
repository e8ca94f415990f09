"""Write episodes as a TFDS dataset directory — the on-disk layout of the official RLDS releases.

The result is `<data_dir>/<name>/<version>/{dataset_info.json, features.json, <name>-<split>.tfrecord-NNNNN-of-MMMMM}`,
exactly what `tfds.builder_from_directory` loads, so sample data and test fixtures exercise the same reading code
as the real releases. TFDS's own `GeneratorBasedBuilder` does the writing; nothing here is hand-encoded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tensorflow_datasets as tfds

# (key, example) pairs for one split; the key must be unique and stable (TFDS shuffles by its hash).
Examples = Iterable[tuple[str, Mapping[str, Any]]]


def write_tfds_dataset(
    data_dir: str,
    name: str,
    version: str,
    features: tfds.features.FeaturesDict,
    splits: Mapping[str, Callable[[], Examples]],
    num_shards: int | None = None,
    description: str = "",
) -> str:
    """Writes `splits` ({split: () -> examples}) as a TFDS directory and returns the builder directory."""

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def _info(self):
            # DatasetInfo directly: `dataset_info_from_configs` looks for metadata files beside this module.
            return tfds.core.DatasetInfo(builder=self, description=description, features=features)

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(make) for split, make in splits.items()}

        def _generate_examples(self, make_examples):
            yield from make_examples()

        # TFDS announces "Downloading and preparing dataset …": nothing is downloaded here, the samples are
        # written offline, so say nothing (the caller prints the path).
        def _log_download_bytes(self):
            pass

        def _log_download_done(self):
            pass

    _Builder.name = name
    tfds.disable_progress_bar()  # per-example progress bars for a few local files are noise
    with tempfile.TemporaryDirectory(prefix="unisim-tfds-dl-") as download_dir:
        config = tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
            num_shards=num_shards,
        )
        builder = _Builder(data_dir=data_dir, file_format="tfrecord")
        builder.download_and_prepare(download_dir=download_dir, download_config=config)
    return os.path.join(data_dir, name, version)
