"""RLDS datasets in TFDS directories (Open X-Embodiment and the like), read with `tfds.builder_from_directory`.

An `RldsMapping` says where an episode's parts are: the step image, the text (a step feature — the first step's
value is used — or a top-level episode feature), the action fields (flattened and concatenated in the order
given), the control rate (RLDS does not record it) and an optional episode-id feature. `RldsAdapter` reads any
builder directory with a mapping; the built-in robot adapters (language_table, rt1, bridge) are it with a fixed
mapping, and `--dataset rlds` takes the mapping from `--adapter_option`s, guessing what it can (see `Rlds.Options`).

`--source` is a builder directory (`…/<name>/<version>`, holding dataset_info.json) or its parent (the newest
version inside is used), local or gs:// (found through `unisim.fileio`, read by TFDS through tf.io.gfile). Work
units are the TFRecord files of each
split (`train[3shard]`), so workers read files in parallel. Images stay encoded (TFDS's `SkipDecoding`, for every
camera: unused ones cost nothing) and are decoded later only for the frames a clip keeps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from unisim import fileio
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import TextError, decode_text


@dataclasses.dataclass(frozen=True)
class RldsMapping:
    """Where an RLDS episode's frames, text and controls are. Paths are `/`-joined feature names."""

    image: str  # step feature, e.g. "observation/image"
    actions: tuple[str, ...]  # step features, e.g. ("action/world_vector", "action/rotation_delta")
    fps: float  # control rate of the steps
    text: str = ""  # step feature (first step's value) or top-level feature; "" for none
    episode_id: str = ""  # top-level text feature with a stable id ("<split>/<id>" given several splits); "": TFDS's
    control_names: tuple[str, ...] = ()  # () → derived: "<field>" or "<field>_<i>"


def find_builder_dir(source: str) -> str:
    """`source` itself if it holds dataset_info.json, else its newest version sub-directory that does."""
    source = source.rstrip("/")
    if fileio.exists(f"{source}/dataset_info.json"):
        return source
    versions = []
    # glob, not listdir: object stores such as GCS have no directories to list.
    for info in fileio.glob(f"{source}/*/dataset_info.json"):
        entry = info[len(source) + 1 :].split("/", 1)[0]
        parts = entry.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            versions.append((tuple(int(p) for p in parts), entry))
    if not versions and not fileio.exists(source):
        raise FileNotFoundError(f"source {source!r} does not exist")
    if not versions:
        raise FileNotFoundError(
            f"{source!r} is neither a TFDS builder directory (no dataset_info.json) nor holds version directories "
            "such as 1.0.0/ with one; pass e.g. …/<dataset>/1.0.0")
    return f"{source}/{max(versions)[1]}"


def flatten_features(features, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """{"observation/image": Image, …} for a FeaturesDict, leaving out the top-level keys in `skip`."""
    import tensorflow_datasets as tfds

    out = {}
    for key in sorted(k for k in features.keys() if k not in skip):
        feature, path = features[key], f"{prefix}{key}"
        if isinstance(feature, tfds.features.FeaturesDict):
            out.update(flatten_features(feature, f"{path}/"))
        else:
            out[path] = feature
    return out


def describe(features: dict[str, Any]) -> str:
    """One line per feature, for error messages that tell the user what the dataset holds."""
    lines = []
    for path, f in features.items():
        dtype = getattr(f, "np_dtype", None)
        lines.append(f"  {path}: {type(f).__name__}{list(getattr(f, 'shape', ()) or ())} "
                     f"{np.dtype(dtype).name if dtype is not None else ''}")
    return "\n".join(lines)


def _get(tree: dict, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _nest(paths: list[str], value) -> dict:
    """{"a/b": v} → {"a": {"b": v}}: the shape TFDS wants for per-feature decoders."""
    out: dict = {}
    for path in paths:
        *parents, leaf = path.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def text_value(value) -> str:
    """A Text feature's bytes, or zero-padded UTF-8 codes in an int tensor (Language Table) → str; strict UTF-8."""
    if isinstance(value, (bytes, np.bytes_)):
        return decode_text(bytes(value))
    codes = np.asarray(value).reshape(-1)
    return decode_text(bytes(codes[codes != 0].astype(np.uint8).tolist()))


class RldsAdapter(DatasetAdapter):
    """Reads an RLDS builder directory with the mapping `make_mapping` returns. Not registered itself."""

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        self.builder_dir = find_builder_dir(source)
        self.mapping = self.make_mapping()
        self.control_names = self._check_mapping()

    def make_mapping(self) -> RldsMapping:
        raise NotImplementedError

    @functools.cached_property
    def _builder(self):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        tf.get_logger().setLevel("ERROR")  # TFDS's reader triggers TF deprecation warnings on every file
        return tfds.builder_from_directory(self.builder_dir)

    @functools.cached_property
    def step_features(self) -> dict[str, Any]:
        features = self._builder.info.features
        if "steps" not in features.keys():
            raise ValueError(f"{self.builder_dir} is a TFDS dataset but not RLDS: it has no 'steps' "
                             f"(features: {', '.join(features.keys())})")
        return flatten_features(features["steps"].feature)

    @functools.cached_property
    def episode_features(self) -> dict[str, Any]:
        return flatten_features(self._builder.info.features, skip=("steps",))

    def _check_mapping(self) -> tuple[str, ...]:
        """Checks every mapped path against the dataset's features; returns the control names."""
        import tensorflow_datasets as tfds

        m, steps = self.mapping, self.step_features
        where = f"{self.name} on {self.builder_dir}"

        def fail(message: str):
            raise ValueError(f"{where}: {message}\nits step features:\n{describe(steps)}\nits episode features:\n"
                             f"{describe(self.episode_features)}")

        image = steps.get(m.image)
        if not (isinstance(image, tfds.features.Image) or
                (isinstance(image, tfds.features.Tensor) and len(image.shape) == 3 and image.np_dtype == np.uint8)):
            fail(f"image {m.image!r} is not an image step feature")
        if m.text and m.text not in steps and m.text not in self.episode_features:
            fail(f"text {m.text!r} is neither a step nor an episode feature")
        if m.episode_id and m.episode_id not in self.episode_features:
            fail(f"episode id {m.episode_id!r} is not an episode feature")
        names = []
        for path in m.actions:
            feature = steps.get(path)
            if not isinstance(feature, tfds.features.Tensor) or isinstance(feature, tfds.features.Text):
                nested = sorted(p for p in steps if p.startswith(f"{path}/"))
                fail(f"action {path!r} is not a numeric step feature" +
                     (f"; it is a dict: list its fields ({', '.join(nested)})" if nested else ""))
            size = int(np.prod(feature.shape)) if feature.shape else 1
            leaf = path.rsplit("/", 1)[-1]
            names += [leaf] if size == 1 else [f"{leaf}_{i}" for i in range(size)]
        if m.control_names and len(m.control_names) != len(names):
            fail(f"{len(m.control_names)} control names for {len(names)} action values")
        return tuple(m.control_names or names)

    @property
    def dataset_name(self) -> str:
        return self._builder.info.name

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "builder_dir": self.builder_dir, "mapping": dataclasses.asdict(self.mapping)}

    def work_units(self) -> list[str]:
        splits = self._builder.info.splits
        names = [self.split] if self.split else sorted(splits.keys())
        for name in names:
            if name not in splits:
                raise ValueError(f"split {name!r} not in {self.builder_dir}; it has {sorted(splits.keys())}")
        return [f"{name}[{i}shard]" for name in names for i in range(splits[name].num_shards)]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        import tensorflow_datasets as tfds

        images = [p for p, f in self.step_features.items() if isinstance(f, tfds.features.Image)]
        dataset = self._builder.as_dataset(
            split=unit, shuffle_files=False,
            # Keep the JPEG bytes: decoding happens only for kept frames, and a corrupt image becomes a
            # per-clip rejection instead of a TensorFlow error that would end the whole file.
            decoders={"steps": _nest(images, tfds.decode.SkipDecoding())} if images else None,
            # One file per work unit and one reader thread: parallelism comes from the runner's workers, and
            # tf.data's own thread pools would compete with them for the same cores.
            read_config=tfds.ReadConfig(add_tfds_id=True, interleave_cycle_length=1, num_parallel_calls_for_decode=1,
                                        num_parallel_calls_for_interleave_files=1))
        iterator = iter(tfds.as_numpy(dataset))
        split = unit.split("[", 1)[0]
        # How many episodes the file holds, as dataset_info.json records them (`shardLengths`): the episodes a
        # corrupt or short file does not give are each counted as rejected, so input = written + rejected holds.
        shard = int(unit[len(split) + 1:-len("shard]")])
        expected = self._builder.info.splits[split].shard_lengths[shard]
        position = 0
        while True:
            try:
                example = next(iterator)
            except StopIteration:
                yield from self._unread(unit, position, expected, "the file ends there")
                return
            except Exception as e:  # a corrupt TFRecord ends this file: say so instead of losing it silently
                yield from self._unread(unit, position, max(expected, position + 1),
                                        f"the file is unreadable from there ({type(e).__name__}: {e})")
                return
            position += 1
            yield self._episode(example, split)

    def _unread(self, unit: str, first: int, expected: int, why: str) -> Iterator[Rejection]:
        """One `unreadable_source` rejection for each episode `first`..`expected - 1` of the file that was not read."""
        for position in range(first, expected):
            yield self.reject("unreadable_source", f"episode {position} of {expected} in {unit} was not read: {why}",
                              key=f"{unit}@{position}", source_file=unit, source_index=position)

    def _episode(self, example: dict, split: str) -> Episode | Rejection:
        m = self.mapping
        tfds_id = example["tfds_id"].decode()
        file_name, _, index = tfds_id.rpartition("__")
        source_file, source_index = f"{self.builder_dir}/{file_name}", int(index)
        # An id feature is unique within its split only (TFDS checks keys per split; the Bridge RLDS builder counts
        # episodes per file): in a release of several splits the key carries the split. TFDS's record id names its
        # split's file already.
        feature = _get(example, m.episode_id).decode() if m.episode_id else ""
        several = len(self._builder.info.splits) > 1
        episode_id = (f"{split}/{feature}" if several else feature) if feature else tfds_id
        try:
            steps = list(example["steps"])
            if not steps:
                return self.reject("empty_episode", "episode has no steps", episode_id, source_file, source_index)
            frames = [_frame(_get(step, m.image)) for step in steps]
            controls = np.stack([np.concatenate([np.asarray(_get(step, p), np.float32).reshape(-1) for p in m.actions])
                                 if m.actions else np.zeros(0, np.float32) for step in steps])
            text = ""
            if m.text:
                text = text_value(_get(steps[0], m.text) if m.text in self.step_features else _get(example, m.text))
        except TextError as e:
            return self.reject(e.reason, str(e), episode_id, source_file, source_index)
        except (KeyError, ValueError) as e:
            return self.reject("malformed_episode", f"{type(e).__name__}: {e}", episode_id, source_file, source_index)
        return Episode(episode_id=episode_id, frames=frames, fps=m.fps, text=text, controls=controls, split=split,
                       source_file=source_file, source_index=source_index)


def _frame(value) -> bytes | np.ndarray:
    """Encoded bytes as stored (SkipDecoding), or the uint8 array of a Tensor image feature."""
    return bytes(value) if isinstance(value, (bytes, np.bytes_)) else np.asarray(value)


# Guesses for `--dataset rlds`, in order of preference; the names Open X-Embodiment datasets use most.
IMAGE_GUESSES = ("observation/image", "observation/rgb", "observation/image_0", "observation/agentview_rgb",
                 "observation/front_rgb")
TEXT_GUESSES = ("language_instruction", "observation/natural_language_instruction", "observation/instruction",
                "language_instruction_0", "episode_metadata/language_instruction")


@register
class Rlds(RldsAdapter):
    controls_from_options = True
    name = "rlds"
    description = "any RLDS / Open X-Embodiment TFDS directory; which fields to read is set by --adapter_option"

    @dataclasses.dataclass(frozen=True)
    class Options:
        fps: float = option(0.0, "control rate of the steps in Hz; required (RLDS does not record it)")
        image: str = option("", "step image feature (default: the only camera, else the first of "
                                + ", ".join(IMAGE_GUESSES) + ")")
        text: str = option("", "text feature: a step feature (the first step's value is used) or an episode "
                               "feature (default: the first of " + ", ".join(TEXT_GUESSES) + "; none if absent)")
        actions: tuple[str, ...] = option((), "action features, comma-separated, concatenated in this order "
                                              "(default: 'action' if it is a tensor, else its numeric fields in name "
                                              "order)")
        episode_id: str = option("", "episode feature holding a stable id (default: the TFDS record id)")
        require_text: bool = option(True, "reject episodes whose text is empty (empty_text)")

    def make_mapping(self) -> RldsMapping:
        import tensorflow_datasets as tfds

        o, steps = self.options, self.step_features
        if o.fps <= 0:
            raise ValueError("rlds: RLDS does not record the control rate; give it, e.g. --adapter_option fps=3 "
                             "(RT-1 3, Bridge 5, Language Table 10)")
        image = o.image
        if not image:
            cameras = [p for p, f in steps.items() if isinstance(f, tfds.features.Image) and len(f.shape) == 3
                       and f.shape[-1] == 3]
            preferred = [p for p in IMAGE_GUESSES if p in cameras]
            image = cameras[0] if len(cameras) == 1 else (preferred[0] if preferred else "")
            if not image:
                raise ValueError(f"rlds: cannot tell which camera to use among {cameras or 'no RGB image features'}; "
                                 "give --adapter_option image=PATH")
        text = o.text or next((p for p in TEXT_GUESSES if p in steps or p in self.episode_features), "")
        if o.require_text and not text:
            raise ValueError(f"rlds: {self.builder_dir} has none of the usual text features "
                             f"({', '.join(TEXT_GUESSES)}); "
                             "give --adapter_option text=PATH, or require_text=false to keep episodes without text")
        actions = o.actions
        if not actions:
            if isinstance(steps.get("action"), tfds.features.Tensor):
                actions = ("action",)
            else:
                actions = tuple(p for p, f in steps.items()
                                if p.startswith("action/") and isinstance(f, tfds.features.Tensor)
                                and not isinstance(f, tfds.features.Text) and np.issubdtype(f.np_dtype, np.number))
        return RldsMapping(image=image, actions=actions, fps=o.fps, text=text, episode_id=o.episode_id)

    @property
    def requires_text(self) -> bool:
        return self.options.require_text
