"""Training input: grain over the converted ArrayRecord shards, mixed by weight, at the base model's shape.

    mixture spec ─▶ sources (dir, weight) ─▶ per source: endless, per-epoch reshuffled, per-process index stream
                  ─▶ grain mix by weight ─▶ decode + resize + text embedding + condition drop ─▶ batches

Every step is a `grain.MapDataset`, so the position in the stream is one number per iterator and the iterator's
state (`get_state`/`set_state`) checkpoints with the model: a restarted run continues with the same examples.
Nothing here imports TensorFlow (a test checks `sys.modules`); frames decode with OpenCV.

An example (numpy, batched along a leading axis):

| key | shape, dtype | meaning |
| --- | --- | --- |
| `history` | [H, h, w, 3] uint8 | up to `history_frames` frames before the targets, right-aligned, zeros before |
| `history_mask` | [H] bool | which history slots hold a frame |
| `frames` | [T, h, w, 3] uint8 | the target frames, resized to (h, w) from the stored size; zeros after a short clip |
| `frame_mask` | [T] bool | which target slots hold a frame |
| `text`, `text_mask` | [L, d] float16, [L] bool | the conditioning text's T5 embedding, padded to L tokens |
| `controls`, `control_mask` | [T, D] int32, [T, D] bool | for target t, the 4096-bin tokens of the action taken at the frame before it (the action that leads to t); D is the widest source's, padded |
| `drop_condition` | [] bool | classifier-free guidance: this example trains the null condition |
| `source` | [] int32 | index of the mixture component it came from |
"""

from __future__ import annotations

import dataclasses
import functools
import os
import runpy
import threading
from collections.abc import Sequence

import numpy as np

from unisim.schemas import record as rec
from unisim.schemas.manifest import MANIFEST_NAME, Manifest
from unisim.schemas.text_embeddings import TextEmbeddingStore, check_same_encoder, pad

ENDLESS = 2**62  # length of an endless index stream (grain datasets need a length)


class MixtureError(ValueError):
    """A mixture that cannot be trained on: bad spec, missing or incomplete directory, mismatched shards."""


@dataclasses.dataclass(frozen=True)
class Source:
    path: str  # a converted output directory (holds manifest.json)
    weight: float
    name: str = ""  # label in logs (default: the manifest's dataset name)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    batch_size: int = 8
    frames: int = 16  # target frames per example
    history_frames: int = 4
    height: int = 24
    width: int = 40
    text_tokens: int = 64
    condition_drop: float = 0.1  # classifier-free guidance: probability of training the null condition
    seed: int = 0
    threads: int = 4  # grain read threads
    prefetch: int = 2  # batches prefetched


def parse_mixture(spec: str) -> list[Source]:
    """`DIR:WEIGHT,DIR:WEIGHT,…` or a Python file defining `MIXTURE = [(dir, weight[, name]), …]`."""
    if spec.endswith(".py"):
        if not os.path.exists(spec):
            raise MixtureError(f"mixture file {spec} does not exist")
        entries = runpy.run_path(spec).get("MIXTURE")
        if not isinstance(entries, (list, tuple)) or not entries:
            raise MixtureError(f"{spec} must define MIXTURE = [(directory, weight[, name]), …]")
        sources = [Source(str(e[0]), float(e[1]), str(e[2]) if len(e) > 2 else "") for e in entries]
    else:
        sources = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            path, sep, weight = part.rpartition(":")
            try:
                sources.append(Source(path, float(weight)))
            except ValueError:
                raise MixtureError(f"mixture entry {part!r}: expected DIR:WEIGHT") from None
            if not sep or not path:
                raise MixtureError(f"mixture entry {part!r}: expected DIR:WEIGHT")
    if not sources:
        raise MixtureError(f"mixture {spec!r} lists no directories")
    bad = [s for s in sources if not s.weight > 0]
    if bad:
        raise MixtureError(f"mixture weights must be positive: {', '.join(f'{s.path}:{s.weight}' for s in bad)}")
    return sources


def load_manifests(sources: Sequence[Source]) -> list[Manifest]:
    """Each source's manifest; refuses incomplete directories, mixed schema versions and mixed text encoders."""
    manifests = []
    for source in sources:
        path = os.path.join(source.path, MANIFEST_NAME)
        if not os.path.exists(path):
            raise MixtureError(f"{source.path}: no {MANIFEST_NAME} (not a converted directory, or an unfinished run)")
        with open(path, encoding="utf-8") as f:
            try:
                manifest = Manifest.loads(f.read())
            except ValueError as e:  # the schema version check
                raise MixtureError(f"{source.path}: {e}") from None
        if manifest.records == 0:
            raise MixtureError(f"{source.path}: holds no records")
        manifests.append(manifest)
    check_same_encoder(manifests, [s.path for s in sources])  # EncoderMismatchError (a ValueError) names them
    return manifests


def epoch_index(position: int, *, length: int, seed: int, process_index: int, process_count: int) -> int:
    """The record index at `position` of this process's endless stream: epoch after epoch, each a fresh permutation
    of the source, processes taking interleaved positions of it (so they never see the same record in an epoch)."""
    from grain.experimental import index_shuffle

    epoch, within = divmod(position * process_count + process_index, length)
    return index_shuffle(within, max_index=length - 1, seed=(seed + epoch) % 2**32, rounds=4)


class ExampleMaker:
    """(source index, record bytes) → one example dict (see the module docstring). Thread-safe."""

    def __init__(self, sources: Sequence[Source], manifests: Sequence[Manifest], config: InputConfig):
        self._config = config
        self._stores = [TextEmbeddingStore.from_manifest(s.path, m) for s, m in zip(sources, manifests)]
        self._locks = [threading.Lock() for _ in sources]  # a store's readers are shared by grain's threads
        self.control_dims = max(len(m.control_stats.names) if m.control_stats else 0 for m in manifests)

    def __call__(self, item: tuple[int, bytes], rng: np.random.Generator) -> dict[str, np.ndarray]:
        import cv2

        source, data = item
        c = self._config
        record = rec.decode(data, validate_record=False)
        frames = rec.decode_frames(record)
        if frames.shape[1:3] != (c.height, c.width):
            frames = np.stack([cv2.resize(f, (c.width, c.height), interpolation=cv2.INTER_AREA) for f in frames])
        context = record.context_frames
        history, targets = frames[:context][-c.history_frames:], frames[context:][: c.frames]
        example = {
            "history": _pad_front(history, c.history_frames), "history_mask": _mask(len(history), c.history_frames, True),
            "frames": _pad_back(targets, c.frames), "frame_mask": _mask(len(targets), c.frames, False),
        }
        with self._locks[source]:
            embedding = self._stores[source].lookup(record.text_key).embedding
        example["text"], example["text_mask"] = pad(embedding[: c.text_tokens], c.text_tokens)
        controls = np.zeros((c.frames, self.control_dims), np.int32)
        control_mask = np.zeros((c.frames, self.control_dims), bool)
        tokens = record.control_tokens.astype(np.int32)  # [frames in record, D]
        for t in range(len(targets)):
            before = context + t - 1  # the frame whose action leads to target t
            if before >= 0 and tokens.shape[1]:
                controls[t, : tokens.shape[1]] = tokens[before]
                control_mask[t, : tokens.shape[1]] = True
        example["controls"], example["control_mask"] = controls, control_mask
        example["drop_condition"] = np.bool_(rng.random() < c.condition_drop)
        example["source"] = np.int32(source)
        return example


def _mask(n: int, length: int, at_end: bool) -> np.ndarray:
    mask = np.zeros(length, bool)
    if at_end:
        mask[length - n :] = True
    else:
        mask[:n] = True
    return mask


def _pad_front(frames: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length, *frames.shape[1:]), np.uint8)
    if len(frames):
        out[length - len(frames) :] = frames
    return out


def _pad_back(frames: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length, *frames.shape[1:]), np.uint8)
    out[: len(frames)] = frames
    return out


@dataclasses.dataclass
class TrainInput:
    """The batched, checkpointable stream and what it was built from."""

    dataset: object  # grain.IterDataset of batches
    sources: list[Source]
    manifests: list[Manifest]
    weights: np.ndarray  # normalised target proportions
    control_dims: int
    text_dim: int

    def names(self) -> list[str]:
        return [s.name or m.dataset for s, m in zip(self.sources, self.manifests)]


def build_input(sources: Sequence[Source], config: InputConfig, process_index: int = 0,
                process_count: int = 1) -> TrainInput:
    """The training stream for this process: `process_count` processes each read their own interleaved share."""
    import grain

    sources = list(sources)
    manifests = load_manifests(sources)
    components = []
    for i, (source, manifest) in enumerate(zip(sources, manifests)):
        paths = [os.path.join(source.path, s.path) for s in manifest.shards if s.records > 0]
        records = grain.sources.ArrayRecordDataSource(paths)
        positions = functools.partial(epoch_index, length=len(records), seed=config.seed * 1000 + i,
                                      process_index=process_index, process_count=process_count)
        components.append(grain.MapDataset.range(ENDLESS).map(positions)
                          .map(functools.partial(_read, records, i)))
    weights = np.array([s.weight for s in sources], np.float64)
    maker = ExampleMaker(sources, manifests, config)
    dataset = (grain.MapDataset.mix(components, list(weights / weights.sum()))
               .random_map(maker, seed=config.seed)
               .batch(config.batch_size, drop_remainder=True)
               .to_iter_dataset(grain.ReadOptions(num_threads=config.threads, prefetch_buffer_size=config.prefetch)))
    text_dim = int(manifests[0].text_encoder["d_model"])  # the same encoder for all (load_manifests checks)
    return TrainInput(dataset, sources, manifests, weights / weights.sum(), maker.control_dims, text_dim)


def _read(records, source: int, index: int) -> tuple[int, bytes]:
    return source, records[index]


def realized_proportions(source_counts: np.ndarray) -> np.ndarray:
    total = source_counts.sum()
    return source_counts / total if total else source_counts.astype(np.float64)
