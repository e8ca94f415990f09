"""Training input: grain over the converted ArrayRecord shards, mixed by weight, at the base model's shape.

    mixture spec ─▶ sources (dir, weight) ─▶ per source: this process's shards (`Share`), fetched if remote
                  ─▶ endless, per-epoch reshuffled index stream over them ─▶ grain mix by weight
                  ─▶ batches of record bytes ─▶ decoded straight into batch arrays
                     (JPEG decode at the target scale, text embedding, control tokens, condition drop)

Decoding a whole batch into preallocated arrays, not example by example and then stacking, saves a copy of every
frame: measured (bench/loader_throughput.py) 67 → 122 batches/s at 192×320 on 2 cores.

Where a record's targets start: after its context frames (the converter's split), or — with `random_window` — at a
frame drawn per example from [1, max(1, n − frames)] of its n frames, so each record gives every window with at
least one history frame and a full set of targets (where it is long enough), not one (issue 17: a short episode
cut into 16-frame clips otherwise gives one window without history and one with few targets).

Each of H training processes reads whole shards of its own (`host_share`), so a host's disk and network grow as the
dataset / H: a remote source (gs://) has only those shards and their embedding shards copied to the host's cache;
a local path — a FUSE mount such as gcsfuse included — is read in place, touching only those files. Every process
mixes its shares by the weights, so the proportions hold on each host and overall.

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
| `controls`, `control_mask` | [T, D] int32, [T, D] bool | target t's bins: the action leading to t (D: widest) |
| `drop_condition` | [] bool | classifier-free guidance: this example trains the null condition |
| `source` | [] int32 | index of the mixture component it came from |
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import runpy
import threading
from collections.abc import Sequence

import numpy as np

from unisim.schemas import record as rec
from unisim.schemas.errors import UserError
from unisim.schemas.manifest import Manifest, ShardInfo
from unisim.schemas.text_embeddings import TextEmbeddingStore, check_same_encoder
from unisim.shards import reader
from unisim.trainer.streams import Layout, Share, Stream, mix_positions, plan


class MixtureError(UserError):
    """A mixture that cannot be trained on: bad spec, missing or incomplete directory, mismatched shards."""


@dataclasses.dataclass(frozen=True)
class Source:
    path: str  # a converted output directory (holds manifest.json)
    weight: float
    name: str = ""  # label in logs (default: the manifest's dataset name)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """The training input; defaults are the paper's base model (Table 6; `trainer/configs/base.py` takes them)."""

    batch_size: int = 256  # the global batch; each of H processes loads batch_size / H
    frames: int = 16  # target frames per example
    history_frames: int = 4
    height: int = 24
    width: int = 40
    text_tokens: int = 64
    condition_drop: float = 0.1  # classifier-free guidance: probability of training the null condition
    # Probability that an example keeps its controls but loses its text (text_drop), or the reverse (control_drop),
    # so that controls alone and text alone are trained conditions (an agent's controls-only actions; text-only).
    text_drop: float = 0.0
    control_drop: float = 0.0
    # History frames blended with an earlier history frame by a weight drawn from [0, history_ghost] per example: a
    # faint copy of whatever moved where it was, the error an autoregressive rollout's generated history carries
    # (bench/RESULTS.md, long rollouts); the targets stay clean, so the model learns to take it out. 0: off.
    history_ghost: float = 0.0
    seed: int = 0
    threads: int = 16  # grain read threads
    prefetch: int = 16  # batches prefetched; also the most batches grain decodes at once (keep >= threads)
    random_window: bool = False  # targets start at a random frame of the record, not after its context frames
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "unisim", "shards")  # copies of remote sources


def parse_mixture(spec: str) -> list[Source]:
    """`DIR:WEIGHT,DIR:WEIGHT,…` or a Python file defining `MIXTURE = [(dir, weight[, name]), …]`."""
    if spec.endswith(".py"):
        if not os.path.exists(spec):
            raise MixtureError(f"mixture file {spec} does not exist")
        entries = runpy.run_path(spec).get("MIXTURE")
        if not isinstance(entries, (list, tuple)) or not entries:
            raise MixtureError(f"{spec} must define MIXTURE = [(directory, weight[, name]), …]")
        sources = []
        for entry in entries:
            if (not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3) or not isinstance(entry[0], str)
                    or isinstance(entry[1], bool) or not isinstance(entry[1], (int, float))
                    or (len(entry) == 3 and not isinstance(entry[2], str))):
                raise MixtureError(f"{spec}: MIXTURE entry {entry!r} is not (directory, weight[, name])")
            sources.append(Source(entry[0], float(entry[1]), entry[2] if len(entry) == 3 else ""))
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
    bad = [s for s in sources if not (math.isfinite(s.weight) and s.weight > 0)]
    if bad:
        raise MixtureError(f"mixture weights must be positive numbers: "
                           f"{', '.join(f'{s.path}:{s.weight}' for s in bad)}")
    return sources


def load_manifests(sources: Sequence[Source]) -> list[Manifest]:
    """Each source's manifest; refuses incomplete directories, mixed schema versions and mixed text encoders."""
    manifests = []
    for source in sources:
        try:
            manifest = reader.read_manifest(source.path)
        except reader.ManifestError as e:
            raise MixtureError(str(e)) from None
        if manifest.records == 0:
            raise MixtureError(f"{source.path}: holds no records")
        manifests.append(manifest)
    check_same_encoder(manifests, [s.path for s in sources])  # EncoderMismatchError (a ValueError) names them
    return manifests


def share_embeddings(manifest: Manifest, share: Share) -> list[ShardInfo]:
    """The embedding shards a process reading `share` needs: the same indices when the store follows the record
    shards (`Manifest.text_embeddings_by_record_shard`), every one for older outputs."""
    if manifest.text_embeddings_by_record_shard:
        return [manifest.text_embeddings[i] for i in share.shards]
    return list(manifest.text_embeddings)


def share_files(manifest: Manifest, share: Share) -> list[tuple[str, int | None]]:
    """(relative path, size or None) of every file a process reading `share` needs, manifest aside: its record
    shards, its embedding shards (`share_embeddings`) and their keys files."""
    from unisim.schemas.text_embeddings import keys_path

    embeddings = share_embeddings(manifest, share)
    files = [(manifest.shards[i].path, manifest.shards[i].bytes) for i in share.shards]
    files += [(s.path, s.bytes) for s in embeddings] + [(keys_path(s.path), None) for s in embeddings]
    return files


def empty_batch(c: InputConfig, n: int, text_dim: int, control_dims: int) -> dict[str, np.ndarray]:
    """A zeroed batch of `n` examples with the input's shapes and dtypes (see the module docstring): every slot not
    filled (padding) reads as zero / False. The loader fills it; the trainer initialises the model from it."""
    return {"history": np.zeros((n, c.history_frames, c.height, c.width, 3), np.uint8),
            "history_mask": np.zeros((n, c.history_frames), bool),
            "frames": np.zeros((n, c.frames, c.height, c.width, 3), np.uint8),
            "frame_mask": np.zeros((n, c.frames), bool),
            "text": np.zeros((n, c.text_tokens, text_dim), np.float16),
            "text_mask": np.zeros((n, c.text_tokens), bool),
            "controls": np.zeros((n, c.frames, control_dims), np.int32),
            "control_mask": np.zeros((n, c.frames, control_dims), bool),
            "drop_condition": np.zeros((n,), bool), "source": np.zeros((n,), np.int32)}


class ExampleMaker:
    """(source index, record bytes) → one example dict (see the module docstring). Thread-safe."""

    def __init__(self, sources: Sequence[Source], manifests: Sequence[Manifest], config: InputConfig,
                 shares: Sequence[Share] | None = None):
        self._config = config
        shares = shares or [Share(tuple(range(len(m.shards)))) for m in manifests]  # default: everything
        self._stores = [TextEmbeddingStore(s.path, [e.path for e in share_embeddings(m, share)])
                        for s, m, share in zip(sources, manifests, shares)]
        self._locks = [threading.Lock() for _ in sources]  # a store's readers are shared by grain's threads
        self.control_dims = max(len(m.control_stats.names) if m.control_stats else 0 for m in manifests)
        self.text_dim = manifests[0].text_encoder.d_model  # one encoder for all (`load_manifests` checks)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return empty_batch(self._config, n, self.text_dim, self.control_dims)

    def batch(self, items: Sequence[tuple[int, bytes]], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A whole batch, each example decoded straight into its rows (no per-example arrays to stack)."""
        batch = self.empty(len(items))
        for i, item in enumerate(items):
            self.fill(batch, i, item, rng)
        return batch

    def __call__(self, item: tuple[int, bytes], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One example (the rows of a batch of one)."""
        return {key: value[0] for key, value in self.batch([item], rng).items()}

    def fill(self, batch: dict[str, np.ndarray], i: int, item: tuple[int, bytes], rng: np.random.Generator) -> None:
        source, data = item
        c = self._config
        record = rec.decode(data, validate_record=False)
        context = record.context_frames
        if c.random_window and len(record.frames) > 1:
            context = int(rng.integers(1, max(1, len(record.frames) - c.frames) + 1))
        stored, target = (record.height, record.width), (c.height, c.width)
        history = record.frames[max(0, context - c.history_frames):context]  # none when history_frames is 0 (SR)
        targets = record.frames[context:][: c.frames]
        reader.decode_resized(history, stored, target, out=batch["history"][i, c.history_frames - len(history):])
        if c.history_ghost and len(history) > 1:
            ghost(batch["history"][i, c.history_frames - len(history):], rng.uniform(0, c.history_ghost),
                  int(rng.integers(1, len(history))))
        batch["history_mask"][i, c.history_frames - len(history):] = True
        reader.decode_resized(targets, stored, target, out=batch["frames"][i, : len(targets)])
        batch["frame_mask"][i, : len(targets)] = True
        with self._locks[source]:
            embedding = self._stores[source].lookup(record.text_key).embedding[: c.text_tokens]
        batch["text"][i, : len(embedding)] = embedding
        batch["text_mask"][i, : len(embedding)] = True
        tokens = record.control_tokens  # [frames in record, D]
        if tokens.shape[1]:
            for t in range(len(targets)):
                before = context + t - 1  # the frame whose action leads to target t
                if before >= 0:
                    batch["controls"][i, t, : tokens.shape[1]] = tokens[before]
                    batch["control_mask"][i, t, : tokens.shape[1]] = True
        batch["drop_condition"][i] = rng.random() < c.condition_drop
        # Drawn only when asked for, so that runs without them keep their random streams.
        if c.text_drop and tokens.shape[1] and rng.random() < c.text_drop:
            batch["text"][i], batch["text_mask"][i] = 0, False
        elif c.control_drop and rng.random() < c.control_drop:
            batch["controls"][i], batch["control_mask"][i] = 0, False
        batch["source"][i] = source


def ghost(history: np.ndarray, weight: float, lag: int) -> None:
    """In place: each uint8 frame of `history` [n, h, w, 3] from `lag` on becomes (1 − weight) × itself + weight ×
    the frame `lag` before it (`InputConfig.history_ghost`)."""
    h = history.astype(np.float32)
    history[lag:] = np.round((1 - weight) * h[lag:] + weight * h[:-lag]).astype(np.uint8)


@dataclasses.dataclass
class TrainInput:
    """The batched, checkpointable stream and what it was built from."""

    dataset: object  # grain.IterDataset of batches
    sources: list[Source]
    manifests: list[Manifest]
    weights: np.ndarray  # normalised target proportions
    control_dims: int
    text_dim: int
    shares: list[Share]  # what this process reads of each source

    def names(self) -> list[str]:
        return [s.name or m.dataset for s, m in zip(self.sources, self.manifests)]


def build_input(sources: Sequence[Source], config: InputConfig, process_index: int = 0,
                process_count: int = 1, log=None, layouts: Sequence[Layout] = ()) -> TrainInput:
    """The training stream for this process. Each of the `process_count` processes reads its own `Share` of every
    source (whole shards: `host_share`), fetching only those files of a remote source, and mixes the sources by
    weight — so every process, and the run as a whole, follows the weights exactly. `config.batch_size` is this
    process's part of the batch. `layouts`: the run's chain of process counts (`trainer/streams.py`), the last one
    this run's — a run resumed on another count reads what its processes had not read of their epochs first.
    `log` (a print-like callable) gets one line per source: the share, what was carried over, and what was
    fetched."""
    import time

    import grain

    layouts = tuple(layouts) or (Layout(process_count, 0),)
    if layouts[-1].processes != process_count:
        raise ValueError(f"the last layout has {layouts[-1].processes} processes, this run {process_count}")
    manifests = load_manifests(sources)
    weights = np.array([s.weight for s in sources], np.float64)
    planned = plan([[s.records for s in m.shards] for m in manifests], tuple(weights),
                   config.batch_size * process_count, layouts, process_index, config.seed)
    shares = [share for share, _ in planned]
    local_sources = []
    for source, manifest, (share, stream) in zip(sources, manifests, planned):
        files = share_files(manifest, share)
        start = time.monotonic()
        path, fetched = reader.localize(source.path, manifest, files, config.cache_dir)
        local_sources.append(dataclasses.replace(source, path=path))
        if log:
            records = sum(manifest.shards[i].records for i in share.shards)
            size = sum(size or 0 for _, size in files)
            where = f"fetched {fetched:,} bytes in {time.monotonic() - start:.1f} s" if path != source.path else \
                "read in place"
            carried = (f"; {len(stream.carry):,} unread records of the epoch in progress carried over from "
                       f"{layouts[-2].processes} processes" if len(layouts) > 1 else "")
            log(f"[input] {source.name or manifest.dataset}: process {process_index} reads {len(share.shards)} of "
                f"{len(manifest.shards)} shards ({records:,} of {manifest.records:,} records, {size:,} bytes with "
                f"embeddings{'' if share.readers == 1 else f'; shared by {share.readers} processes'}){carried}; "
                f"{where}")
    for source, manifest, share in zip(local_sources, manifests, shares):
        check_share(source.path, manifest, share)
    records = [grain.sources.ArrayRecordDataSource([os.path.join(source.path, manifest.shards[s].path)
                                                    for s in share.shards])
               for source, manifest, share in zip(local_sources, manifests, shares)]
    maker = ExampleMaker(local_sources, manifests, config, shares)
    dataset = (mix_positions(weights)
               .map(functools.partial(_read, records, [stream for _, stream in planned]))
               .batch(config.batch_size, drop_remainder=True, batch_fn=list)  # record bytes; decoded per batch
               .random_map(maker.batch, seed=config.seed + (len(layouts) - 1) * 7919)  # a resume: new draws
               .to_iter_dataset(grain.ReadOptions(num_threads=config.threads, prefetch_buffer_size=config.prefetch)))
    return TrainInput(dataset, local_sources, manifests, weights / weights.sum(), maker.control_dims, maker.text_dim,
                      shares)


def check_share(directory: str, manifest: Manifest, share: Share) -> None:
    """Refuses (MixtureError, one line per shard) a share whose record or embedding shards are missing or are not the
    size and record count the manifest recorded: a replaced, truncated or deleted shard, before training reads it."""
    problems = reader.shard_problems(directory, [manifest.shards[i] for i in share.shards]
                                     + share_embeddings(manifest, share))
    if problems:
        raise MixtureError(f"{directory}: " + "; ".join(problems) + " (re-convert it, or restore the shards)")


def _read(records: Sequence, streams: Sequence[Stream], position: tuple[int, int]) -> tuple[int, bytes]:
    source, k = position
    return source, records[source][streams[source](k)]


def realized_proportions(source_counts: np.ndarray) -> np.ndarray:
    total = source_counts.sum()
    return source_counts / total if total else source_counts.astype(np.float64)
