"""The convert pipeline: a dataset's official release → validated clip records in ArrayRecord shards + manifest.

    work units ─ReadEpisodes─▶ episodes ─MakeClips─▶ clips ─Tokenize─▶ records ─WriteShards─▶ shards ─▶ manifest
                     │                      │  └─ control rows ─ControlStats─▶ (side input) ─┘
                     └──────── rejected ────┴───────────────────────────────────────────────▶ dead letter

Every step is a named composite transform; every rejected item leaves through a tagged "rejected" output with a
reason code and ends in `rejected.jsonl`, counted by reason in the manifest. Records are assigned to shards by a
hash of their key and sorted by key inside each shard, so the output bytes do not depend on worker count or
bundle order. Local runs use Beam's FnApiRunner directly (never the Prism download that DirectRunner may try).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shlex
import sys
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from unisim.adapters import registry
from unisim.adapters.base import DatasetAdapter, Episode
from unisim.pipelines import clips as clip_planning
from unisim.pipelines import frames as frame_ops
from unisim.pipelines import output as out
from unisim.pipelines.progress import Progress
from unisim.schemas import record as rec
from unisim.schemas.controls import ControlStats, ControlTokenizer
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.manifest import DEAD_LETTER_NAME, MANIFEST_NAME, Manifest, ShardInfo, shard_name

REJECTED = "rejected"
CONTROL_ROWS = "control_rows"
_NAMESPACE = "unisim"
LOCAL_RUNNERS = ("local", "DirectRunner", "FnApiRunner")


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    dataset: str
    source: str
    output: str
    split: str | None = None
    fps: float | None = None  # None: keep the source rate
    frames_per_clip: int = 20
    context_frames: int = 4
    frame: frame_ops.FrameSpec = frame_ops.FrameSpec()
    records_per_shard: int = 256
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    stats_sample_rate: float = 1.0  # fraction of control rows the statistics see; sampled by key hash

    def __post_init__(self):
        if not 0 <= self.context_frames < self.frames_per_clip:
            raise ValueError(f"need 0 <= context_frames ({self.context_frames}) < frames_per_clip ({self.frames_per_clip})")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.records_per_shard <= 0:
            raise ValueError("records_per_shard must be positive")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError("need 0 <= low_percentile < high_percentile <= 100")
        if not 0 < self.stats_sample_rate <= 1:
            raise ValueError("stats_sample_rate must be in (0, 1]")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hash_unit(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64


def shard_of(key: str, num_shards: int) -> int:
    return int(_hash_unit(key) * num_shards)


# ---------------------------------------------------------------------------------------------------- read


class _ReadEpisodesFn(beam.DoFn):
    def __init__(self, dataset: str, source: str, split: str | None):
        self._args = (dataset, source, split)

    def setup(self):
        dataset, source, split = self._args
        self.adapter: DatasetAdapter = registry.get(dataset)(source, split)
        self.episodes = Metrics.counter(_NAMESPACE, "episodes_read")
        self.rejected = Metrics.counter(_NAMESPACE, "rejected_at_read")

    def process(self, unit: str):
        for item in self.adapter.read(unit):
            if isinstance(item, Rejection):
                self.rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, item)
            else:
                self.episodes.inc()
                yield item


class ReadEpisodes(beam.PTransform):
    """Work units → episodes (main output) and adapter rejections (`rejected`)."""

    def __init__(self, config: ConvertConfig, units: list[str]):
        super().__init__()
        self._config, self._units = config, units

    def expand(self, pipeline):
        c = self._config
        return (pipeline
                | "ListWorkUnits" >> beam.Create(self._units)
                | "Distribute" >> beam.Reshuffle()  # lets each worker take its own units
                | "Read" >> beam.ParDo(_ReadEpisodesFn(c.dataset, c.source, c.split)).with_outputs(REJECTED, main="episodes"))


# --------------------------------------------------------------------------------------------------- clips


class _MakeClipsFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool):
        self._config = config
        self._dataset_name = dataset_name
        self._control_dims = control_dims
        self._requires_text = requires_text

    def setup(self):
        # One OpenCV thread per worker: runners already run one worker per core, and OpenCV's own thread pool
        # on top of that oversubscribes the cores (measured: 2 local workers were slower than 1 without this).
        frame_ops.cv2.setNumThreads(1)
        self.records = Metrics.counter(_NAMESPACE, "clips_made")
        self.frames = Metrics.counter(_NAMESPACE, "frames_encoded")
        self.rejected = Metrics.counter(_NAMESPACE, "rejected_clips")
        self.progress = Progress("convert")

    def _reject(self, episode: Episode, key: str, reason: str, detail: str):
        self.rejected.inc()
        return beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key, reason, detail,
                                                            episode.source_file, episode.source_index))

    def process(self, episode: Episode):
        c = self._config
        if self._requires_text and not episode.text.strip():
            yield self._reject(episode, episode.episode_id, "empty_text", "the episode's text action is empty")
            return
        controls = np.asarray(episode.controls, np.float32)
        if controls.shape != (len(episode.frames), self._control_dims):
            yield self._reject(episode, episode.episode_id, "malformed_controls",
                               f"controls have shape {list(controls.shape)}, expected [{len(episode.frames)}, {self._control_dims}]")
            return
        fps = c.fps or episode.fps
        kept = clip_planning.resample_indices(len(episode.frames), episode.fps, c.fps)
        if self._control_dims:
            yield beam.pvalue.TaggedOutput(CONTROL_ROWS, self._sample_rows(episode.episode_id, kept, controls))
        encoded: dict[int, bytes | frame_ops.FrameError] = {}
        frames_done = 0
        for plan in clip_planning.plan_clips(kept, c.frames_per_clip, c.context_frames):
            key = rec.clip_key(episode.episode_id, plan.clip_index)
            indices = [int(i) for i in plan.frame_indices]
            # Clips only overlap their predecessor: anything this clip does not use is never needed again.
            needed = set(indices)
            encoded = {i: v for i, v in encoded.items() if i in needed}
            clip_controls = controls[indices]
            if not np.isfinite(clip_controls).all():
                bad = sorted({indices[t] for t in np.nonzero(~np.isfinite(clip_controls).all(axis=1))[0]})
                yield self._reject(episode, key, "non_finite_control", f"NaN or infinite control at source frames {bad}")
                continue
            for i in indices:
                if i not in encoded:
                    try:
                        encoded[i] = frame_ops.process(episode.frames[i], c.frame)
                        frames_done += 1
                    except frame_ops.FrameError as e:
                        encoded[i] = e
            errors = [(i, encoded[i]) for i in indices if isinstance(encoded[i], frame_ops.FrameError)]
            if errors:
                yield self._reject(episode, key, "undecodable_image", f"source frame {errors[0][0]}: {errors[0][1]}")
                continue
            clip_frames = [encoded[i] for i in indices]
            self.records.inc()
            yield rec.ClipRecord(
                dataset=self._dataset_name, episode_id=episode.episode_id, clip_index=plan.clip_index,
                frames=clip_frames, image_format=c.frame.image_format, height=c.frame.height,
                width=c.frame.width, fps=float(fps), context_frames=plan.context_frames, text=episode.text,
                controls=clip_controls, control_tokens=np.zeros(clip_controls.shape, np.uint16),
                frame_indices=plan.frame_indices, is_image=episode.is_image, split=episode.split,
                source_file=episode.source_file, source_index=episode.source_index)
        self.frames.inc(frames_done)
        self.progress.add(episodes=1, frames=frames_done)

    def _sample_rows(self, episode_id: str, kept: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """The kept frames' controls, each source row once, thinned by a key hash when sampling is on."""
        rows = np.unique(kept)
        rate = self._config.stats_sample_rate
        if rate < 1:
            rows = np.array([r for r in rows if _hash_unit(f"{episode_id}:{r}") < rate], np.int64)
        return controls[rows]

    def teardown(self):
        if getattr(self, "progress", None) and self.progress.counts:
            self.progress.report()


class MakeClips(beam.PTransform):
    """Episodes → clip records with frames resized and encoded (tokens not yet set), control rows, rejections."""

    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool):
        super().__init__()
        self._fn = _MakeClipsFn(config, dataset_name, control_dims, requires_text)

    def expand(self, episodes):
        return episodes | "Clip" >> beam.ParDo(self._fn).with_outputs(REJECTED, CONTROL_ROWS, main="clips")


# ------------------------------------------------------------------------------------------------ controls


class _ControlStatsFn(beam.CombineFn):
    """Exact robust bounds over all (sampled) control rows; order-independent, so reruns give equal bytes."""

    def __init__(self, names: tuple[str, ...], low_percentile: float, high_percentile: float):
        self._names, self._low, self._high = names, low_percentile, high_percentile

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, rows):
        accumulator.append(np.asarray(rows, np.float32).reshape(-1, len(self._names)))
        return accumulator

    def merge_accumulators(self, accumulators):
        return [rows for acc in accumulators for rows in acc]

    def extract_output(self, accumulator):
        values = np.concatenate(accumulator) if accumulator else np.zeros((0, len(self._names)), np.float32)
        values = np.sort(values[np.isfinite(values).all(axis=1)], axis=0)  # sorted: mean/std sum in a fixed order
        if values.shape[0] == 0:
            return None
        return ControlStats.from_values(self._names, values, self._low, self._high)


class _TokenizeFn(beam.DoFn):
    def setup(self):
        self.written = Metrics.counter(_NAMESPACE, "records_encoded")
        self._tokenizer: ControlTokenizer | None = None

    def process(self, record: rec.ClipRecord, stats: ControlStats | None):
        if stats is not None and record.controls.size:  # replace, not mutate: Beam inputs are immutable
            if self._tokenizer is None or self._tokenizer.stats != stats:  # the side input is one value per run
                self._tokenizer = ControlTokenizer(stats)
            record = dataclasses.replace(record, control_tokens=self._tokenizer.encode(record.controls))
        try:
            data = rec.encode(record)
        except rec.RecordError as e:
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(record.dataset, record.key, f"invalid_record:{e.field}",
                                                               str(e), record.source_file, record.source_index))
            return
        self.written.inc()
        yield record.key, data, record.num_frames, record.fps


# ------------------------------------------------------------------------------------------------- shards


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, dataset_name: str):
        self._output, self._dataset_name = output, dataset_name

    def setup(self):
        self.shards = Metrics.counter(_NAMESPACE, "shards_written")
        self.duplicates = Metrics.counter(_NAMESPACE, "rejected_duplicates")

    def process(self, element, num_shards: int):
        index, items = element
        items = sorted(items, key=lambda item: (item[0], item[1]))
        unique = []
        for item in items:
            key = item[0]
            if unique and unique[-1][0] == key:  # same key twice: keep the first in byte order, reject the rest
                self.duplicates.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key, "duplicate_key",
                                                                   "another record has the same episode id and clip index"))
                continue
            unique.append(item)
        name = shard_name(index, num_shards)
        count, size = out.write_shard((data for _, data, _, _ in unique), out.join(self._output, name))
        self.shards.inc()
        frames = [f for _, _, f, _ in unique]
        yield index, ShardInfo(path=name, records=count, bytes=size), (min(frames), max(frames), {fps for *_, fps in unique})


class WriteShards(beam.PTransform):
    """(key, bytes, frames, fps) records → ArrayRecord shards; outputs (index, ShardInfo, (min, max frames, fps set))."""

    def __init__(self, output: str, dataset_name: str, records_per_shard: int):
        super().__init__()
        self._output, self._dataset_name, self._per_shard = output, dataset_name, records_per_shard

    def expand(self, records):
        num_shards = beam.pvalue.AsSingleton(
            records
            | "CountRecords" >> beam.combiners.Count.Globally()
            | "NumShards" >> beam.Map(lambda n, per: max(1, math.ceil(n / per)), self._per_shard))
        return (records
                | "AssignShard" >> beam.Map(lambda r, n: (shard_of(r[0], n), r), num_shards)
                | "GroupByShard" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(_WriteShardFn(self._output, self._dataset_name), num_shards)
                .with_outputs(REJECTED, main="shards")), num_shards


# ----------------------------------------------------------------------------------------------- manifest


class _FinishFn(beam.DoFn):
    """Writes the dead letter, fills any shard index that got no records with an empty shard, then the manifest."""

    def __init__(self, config: ConvertConfig, dataset_name: str, command: str):
        self._config, self._dataset_name, self._command = config, dataset_name, command

    def process(self, _, shards, num_shards, rejections, stats, source_episodes):
        c = self._config
        dead = sorted(rejections)
        out.publish_bytes("".join(r.to_json_line() + "\n" for r in dead).encode("utf-8"),
                          out.join(c.output, DEAD_LETTER_NAME))
        by_index = {index: (info, frames) for index, info, frames in shards}
        for index in range(num_shards):
            if index not in by_index:
                name = shard_name(index, num_shards)
                count, size = out.write_shard([], out.join(c.output, name))
                by_index[index] = (ShardInfo(name, count, size), None)
        spans = [frames for _, frames in by_index.values() if frames]
        fps_values = sorted(set().union(*(s[2] for s in spans)))
        reasons: dict[str, int] = {}
        for r in dead:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        manifest = Manifest(
            dataset=self._dataset_name, records=sum(info.records for info, _ in by_index.values()),
            source_episodes=source_episodes, rejected=len(dead), rejected_reasons=dict(sorted(reasons.items())),
            frame_height=c.frame.height, frame_width=c.frame.width, image_format=c.frame.image_format,
            fps=fps_values[0] if len(fps_values) == 1 else 0.0, fps_values=fps_values,
            frames_per_record=(min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0, 0),
            frames_per_clip=c.frames_per_clip, context_frames=c.context_frames, control_stats=stats,
            shards=[by_index[i][0] for i in sorted(by_index)], command=self._command, options=c.to_json())
        out.publish_bytes(manifest.dumps().encode("utf-8"), out.join(c.output, MANIFEST_NAME))
        yield manifest


# ------------------------------------------------------------------------------------------------- wiring


def build(pipeline: beam.Pipeline, config: ConvertConfig, adapter: DatasetAdapter, units: list[str], command: str):
    """Adds the whole conversion to `pipeline`; returns the PCollection holding the one Manifest."""
    name = adapter.dataset_name
    read = pipeline | "ReadEpisodes" >> ReadEpisodes(config, units)
    made = read.episodes | "MakeClips" >> MakeClips(config, name, len(adapter.control_names), adapter.requires_text)
    stats = (made[CONTROL_ROWS]
             | "ControlStats" >> beam.CombineGlobally(
                 _ControlStatsFn(tuple(adapter.control_names), config.low_percentile, config.high_percentile)))
    tokenized = (made.clips
                 | "Tokenize" >> beam.ParDo(_TokenizeFn(), beam.pvalue.AsSingleton(stats)).with_outputs(REJECTED, main="records"))
    written, num_shards = tokenized.records | "WriteShards" >> WriteShards(config.output, name, config.records_per_shard)
    rejected = ((read[REJECTED], made[REJECTED], tokenized[REJECTED], written[REJECTED])
                | "AllRejected" >> beam.Flatten())
    episodes = ((read.episodes | "CountEpisodes" >> beam.combiners.Count.Globally(),
                 read[REJECTED] | "CountReadRejects" >> beam.combiners.Count.Globally())
                | "EpisodeCounts" >> beam.Flatten() | "SumEpisodes" >> beam.CombineGlobally(sum))
    return (pipeline
            | "Finish" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                _FinishFn(config, name, command), beam.pvalue.AsList(written.shards), num_shards,
                beam.pvalue.AsList(rejected), beam.pvalue.AsSingleton(stats), beam.pvalue.AsSingleton(episodes)))


def pipeline_options(beam_args: list[str], runner: str, num_workers: int) -> tuple[Any, PipelineOptions]:
    """The runner object and options. Local runs use FnApiRunner: parallel over processes, nothing downloaded."""
    options = PipelineOptions(beam_args)
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = num_workers
        direct.direct_running_mode = "multi_processing" if num_workers > 1 else "in_memory"
        return FnApiRunner(), options
    options.view_as(StandardOptions).runner = runner
    return runner, options


def run(config: ConvertConfig, beam_args: list[str] | None = None, runner: str = "local", num_workers: int = 1,
        command: str | None = None) -> tuple[Manifest, dict[str, int]]:
    """Converts one dataset; returns the manifest it wrote and the Beam counters of the run.

    Raises early, with a clear message, on a bad setup (unknown dataset, missing source, foreign output files).
    """
    adapter = registry.get(config.dataset)(config.source, config.split)
    units = adapter.work_units()
    if not units:
        raise FileNotFoundError(f"{config.dataset}: found nothing to read under {config.source}")
    out.prepare_output_dir(config.output)
    command = command if command is not None else shlex.join(sys.argv)
    runner_obj, options = pipeline_options(beam_args or [], runner, num_workers)
    pipeline = beam.Pipeline(runner=runner_obj, options=options)
    build(pipeline, config, adapter, units, command)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == _NAMESPACE}
    return Manifest.loads(out.read_text(out.join(config.output, MANIFEST_NAME))), counters
