"""Language Table (Lynch et al. 2023) in its official RLDS release, read with `tfds.builder_from_directory`.

`--source` is a builder directory (`…/language_table_sim/0.0.1`, holding dataset_info.json) or its parent (the
newest version inside is used); local or any path tf.io.gfile reads (gs://). Every variant works
(`language_table`, `language_table_sim`, `language_table_blocktoblock_*`, …): records are named after the variant.

Per step the release has `observation{rgb uint8[360,640,3] JPEG, instruction int32[512] zero-padded UTF-8,
effector_translation f32[2], effector_target_translation f32[2]}`, `action f32[2]`, `reward`, `is_first`,
`is_last`, `is_terminal`. An episode becomes: frames = the rgb JPEG bytes as stored (decoded later, only for the
frames a clip keeps), text = the instruction of the first step, controls = `action` per step, 10 Hz.
Work units are the TFRecord files of each split (`train[3shard]`), so workers read files in parallel.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from unisim.adapters.base import DatasetAdapter, Episode
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import TextError, decode_text

CONTROL_HZ = 10.0


def decode_instruction(codes: np.ndarray) -> str:
    """The release's decoding, `bytes(inst[inst != 0]).decode("utf-8")`; bad bytes raise `TextError`."""
    codes = np.asarray(codes)
    return decode_text(bytes(codes[codes != 0].astype(np.uint8).tolist()))


def find_builder_dir(source: str) -> str:
    """`source` itself if it holds dataset_info.json, else its newest version sub-directory that does."""
    import tensorflow as tf

    source = source.rstrip("/")
    if tf.io.gfile.exists(f"{source}/dataset_info.json"):
        return source
    versions = []
    # glob, not listdir: object stores such as GCS have no directories to list.
    for info in tf.io.gfile.glob(f"{source}/*/dataset_info.json"):
        entry = info[len(source) + 1 :].split("/", 1)[0]
        parts = entry.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            versions.append((tuple(int(p) for p in parts), entry))
    if not versions and not tf.io.gfile.exists(source):
        raise FileNotFoundError(f"Language Table source {source!r} does not exist")
    if not versions:
        raise FileNotFoundError(
            f"{source!r} is neither a TFDS builder directory (no dataset_info.json) nor holds version directories "
            "such as 0.0.1/ with one; pass e.g. …/language_table_sim/0.0.1")
    return f"{source}/{max(versions)[1]}"


@register
class LanguageTable(DatasetAdapter):
    name = "language_table"
    description = "Language Table RLDS (real, sim and block-to-block variants): rgb + instruction + 2-D actions"
    control_names = ("action_dx", "action_dy")

    def __init__(self, source: str, split: str | None = None):
        super().__init__(source, split)
        self.builder_dir = find_builder_dir(source)

    @functools.cached_property
    def _builder(self):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.get_logger().setLevel("ERROR")  # TFDS's reader triggers TF deprecation warnings on every file
        return tfds.builder_from_directory(self.builder_dir)

    @property
    def dataset_name(self) -> str:
        return self._builder.info.name

    def work_units(self) -> list[str]:
        splits = self._builder.info.splits
        names = [self.split] if self.split else sorted(splits.keys())
        for name in names:
            if name not in splits:
                raise ValueError(f"split {name!r} not in {self.builder_dir}; it has {sorted(splits.keys())}")
        return [f"{name}[{i}shard]" for name in names for i in range(splits[name].num_shards)]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        import tensorflow_datasets as tfds

        split = unit.split("[", 1)[0]
        dataset = self._builder.as_dataset(
            split=unit, shuffle_files=False,
            # Keep the JPEG bytes: decoding happens only for kept frames, and a corrupt image becomes a
            # per-clip rejection instead of a TensorFlow error that would end the whole file.
            decoders={"steps": {"observation": {"rgb": tfds.decode.SkipDecoding()}}},
            # One file per work unit and one reader thread: parallelism comes from the runner's workers, and
            # tf.data's own thread pools would compete with them for the same cores.
            read_config=tfds.ReadConfig(add_tfds_id=True, interleave_cycle_length=1, num_parallel_calls_for_decode=1,
                                        num_parallel_calls_for_interleave_files=1))
        iterator = iter(tfds.as_numpy(dataset))
        position = 0
        while True:
            try:
                example = next(iterator)
            except StopIteration:
                return
            except Exception as e:  # a corrupt TFRecord ends this file: say so instead of losing it silently
                yield self.reject("unreadable_source", f"{type(e).__name__}: {e}", key=f"{unit}@{position}",
                                  source_file=unit, source_index=position)
                return
            position += 1
            yield self._episode(example, split)

    def _episode(self, example: dict, split: str) -> Episode | Rejection:
        tfds_id = example["tfds_id"].decode()
        file_name, _, index = tfds_id.rpartition("__")
        source_file = f"{self.builder_dir}/{file_name}"
        episode_id = example["episode_id"].decode() or tfds_id
        try:
            steps = list(example["steps"])
            if not steps:
                return self.reject("empty_episode", "episode has no steps", episode_id, source_file, int(index))
            frames = [bytes(step["observation"]["rgb"]) for step in steps]
            controls = np.stack([np.asarray(step["action"], np.float32).reshape(2) for step in steps])
            text = decode_instruction(steps[0]["observation"]["instruction"])
        except TextError as e:
            return self.reject(e.reason, str(e), episode_id, source_file, int(index))
        except (KeyError, ValueError) as e:
            return self.reject("malformed_episode", f"{type(e).__name__}: {e}", episode_id, source_file, int(index))
        return Episode(episode_id=episode_id, frames=frames, fps=CONTROL_HZ, text=text, controls=controls,
                       split=split, source_file=source_file, source_index=int(index))
