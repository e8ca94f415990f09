"""The convert pipeline: a dataset's official release → validated clip records in ArrayRecord shards + manifest.

    work units ─ReadEpisodes─▶ episodes ─MakeClips─▶ clips ─Tokenize─▶ records ─WriteShards─▶ shards ──▶ manifest
                     │                      │  ├─ control rows ─ControlStats─▶ (side input) ─┘              ▲
                     │                      │  └─ (text_key, conditioning text) ─EmbedTexts─▶ embedding store
                     └──────── rejected ────┴────────────────────────────────────────────────▶ dead letter

Every step is a named composite transform; every rejected item leaves through a tagged "rejected" output with a
reason code and ends in the dead letter (`rejected-*.jsonl`, written in parallel: `pipelines.dead_letter`), counted
by reason in the manifest. Records are assigned to shards by a hash of their key and sorted by key inside each
shard (`pipelines.shards`), so the output bytes do not depend on worker count or bundle order. No step holds all
items: the manifest is built from per-shard and per-file summaries, and the control statistics from a bounded
sample (`_ControlStatsFn`). Text actions become conditioning texts (`schemas.text`) embedded once each
(`pipelines.embed`). Local runs use Beam's FnApiRunner directly (never the Prism download that DirectRunner may try)
with one worker or `worker_processes` SDK worker processes, clip threads inside each (`pipelines.lanes`) and
records spilled to disk across the shuffle (`pipelines.spill`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import shlex
import shutil
import sys
import tempfile
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.portability import common_urns
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions
from apache_beam.transforms.window import GlobalWindows

from unisim import fileio
from unisim.adapters import registry
from unisim.adapters.base import DatasetAdapter, Episode, FrameUnavailable
from unisim.pipelines import clips as clip_planning
from unisim.pipelines import dead_letter
from unisim.pipelines import frames as frame_ops
from unisim.pipelines import output as out
from unisim.pipelines import resume, shards
from unisim.pipelines.embed import EmbedTexts, EncoderSettings
from unisim.pipelines.lanes import OrderedLanes
from unisim.pipelines.progress import Progress
from unisim.pipelines.spill import SpillWriter
from unisim.schemas import record as rec
from unisim.schemas import text as text_rules
from unisim.schemas.controls import DEFAULT_SAMPLE_ROWS, ControlSample, ControlStats, ControlTokenizer, row_hashes
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.manifest import MANIFEST_NAME, RECORD_PREFIX, Manifest, merge_frame_rates
from unisim.schemas.options import option

REJECTED = shards.REJECTED
CONTROL_ROWS = "control_rows"
TEXTS = "texts"
_NAMESPACE = shards.NAMESPACE
LOCAL_RUNNERS = ("local", "DirectRunner", "FnApiRunner")


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """How text actions become conditioning text (`schemas.text`) and embeddings. Per run, so per dataset."""

    domain_prefix: str | None = option(None, "identifier prepended to every action (none: the dataset name; '' for "
                                             "no prefix)")
    controls_as_text: bool | None = option(None, "append the clip's controls as text (auto: when the dataset has "
                                                 "controls)", values={"auto": None, "on": True, "off": False})
    controls_text_steps: int = option(4, "segments the controls text summarises")
    controls_text_decimals: int = option(2, "decimals in the controls text")
    max_text_chars: int = option(text_rules.MAX_TEXT_CHARS, "longer action texts are rejected as text_too_long")
    # None: conditioning texts are written and counted, not embedded
    encoder: EncoderSettings | None = option(None, "the text encoder", flatten=True, presence="path")

    def conditioning(self, dataset_name: str, has_controls: bool) -> text_rules.ConditioningSpec:
        return text_rules.ConditioningSpec(
            domain_prefix=dataset_name if self.domain_prefix is None else self.domain_prefix,
            controls_as_text=has_controls if self.controls_as_text is None else self.controls_as_text,
            controls_text_steps=self.controls_text_steps, controls_text_decimals=self.controls_text_decimals,
            max_text_chars=self.max_text_chars)


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One conversion: every `unisim convert` option is a field here (the flags and the docs' table are generated
    from these declarations, `schemas.options`)."""

    dataset: str = option(help="adapter name (see `unisim adapters`)")
    source: str = option(help="the release's directory (local or gs://)")
    output: str = option(help="output directory (local or gs://); must be new, empty, or a previous output")
    split: str | None = option(None, "one split only (none: all)")
    # the adapter's `Options`, by name: from --adapter_option / --adapter_config (the CLI builds it)
    adapter_options: dict[str, Any] = option(cli=False, default_factory=dict)
    fps: float | None = option(None, "target frame rate: frames are skipped (or repeated) to the nearest earlier "
                                     "source frame (none: keep the source rate)")
    fit_spans: bool = option(False, "annotated actions (ssv2, ego4d, epic_kitchens, video_captions): spread each "
                                    "clip's frames over the whole annotated span (the rate varies per record) "
                                    "instead of centring it at --fps")
    frames_per_clip: int = option(20, "frames per record, history included")
    context_frames: int = option(4, "history frames overlapping the previous clip")
    frame: frame_ops.FrameSpec = option(frame_ops.FrameSpec(), "stored frames", flatten=True)
    records_per_shard: int = option(256, "records per ArrayRecord shard (the shard count follows from it)")
    low_percentile: float = option(1.0, "control bound percentile: the bottom of bin 0")
    high_percentile: float = option(99.0, "control bound percentile: the top of bin 4095")
    stats_sample_rate: float = option(1.0, "fraction of control rows the statistics see (sampled by key hash)")
    stats_max_rows: int = option(DEFAULT_SAMPLE_ROWS, "control rows the percentiles are exact up to; above, a "
                                                      "deterministic hash-chosen sample of this many (bounded memory; "
                                                      "rank error in schemas/controls.py)")
    text: TextOptions = option(TextOptions(), "text actions", flatten=True)

    def __post_init__(self):
        if not 0 <= self.context_frames < self.frames_per_clip:
            raise ValueError(f"need 0 <= context_frames ({self.context_frames}) < frames_per_clip "
                             f"({self.frames_per_clip})")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.records_per_shard <= 0:
            raise ValueError("records_per_shard must be positive")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError("need 0 <= low_percentile < high_percentile <= 100")
        if not 0 < self.stats_sample_rate <= 1:
            raise ValueError("stats_sample_rate must be in (0, 1]")
        if self.stats_max_rows < 1:
            raise ValueError("stats_max_rows must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------- read


class _ReadEpisodesFn(beam.DoFn):
    def __init__(self, config: ConvertConfig):
        self._args = (config.dataset, config.source, config.split, dict(config.adapter_options))

    def setup(self):
        self.adapter: DatasetAdapter = registry.create(*self._args)
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
                | "Read" >> beam.ParDo(_ReadEpisodesFn(c)).with_outputs(REJECTED, main="episodes"))


# --------------------------------------------------------------------------------------------------- clips


@dataclasses.dataclass(frozen=True)
class _EpisodeDone:
    frames: int  # frames the episode encoded
    resumed: bool = False  # its outputs were kept by an earlier, unfinished run (`pipelines/resume.py`)


class _MakeClipsFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool,
                 conditioning: text_rules.ConditioningSpec, threads: int,
                 kept: resume.EpisodeStore = resume.EpisodeStore()):
        self._config = config
        self._threads = threads
        self.kept = kept
        self._dataset_name = dataset_name
        self._control_dims = control_dims
        self._requires_text = requires_text
        self._conditioning = conditioning

    def setup(self):
        # One OpenCV thread per lane: runners already run one worker per core, and OpenCV's own thread pool on top
        # of that oversubscribes the cores (measured: 2 local workers were slower than 1 without this).
        frame_ops.cv2.setNumThreads(1)
        self.records = Metrics.counter(_NAMESPACE, "clips_made")
        self.frames = Metrics.counter(_NAMESPACE, "frames_encoded")
        self.rejected = Metrics.counter(_NAMESPACE, "rejected_clips")
        self.resumed = Metrics.counter(_NAMESPACE, "episodes_resumed")
        self.converted = Metrics.counter(_NAMESPACE, "episodes_converted")
        self.progress = Progress("convert")
        self.lanes = OrderedLanes(self._threads, self._episode_outputs)

    def process(self, episode: Episode):
        # Lazy video windows name their file, so windows of one video share a lane and its parked decoder.
        outputs = self.lanes.submit(episode, affinity=getattr(episode.frames, "decoder_key", None))
        yield from self._counted(outputs)

    def finish_bundle(self):
        # Outputs of items still in flight; finish_bundle must give windowed values (this pipeline is global-window).
        for value in self._counted(self.lanes.drain()):
            if isinstance(value, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(value.tag, GlobalWindows.windowed_value(value.value))
            else:
                yield GlobalWindows.windowed_value(value)

    def _counted(self, outputs):
        """Counts on the caller's thread: Beam's metrics are bound to it, not to the lanes."""
        for value in outputs:
            if isinstance(value, _EpisodeDone):
                (self.resumed if value.resumed else self.converted).inc()
                self.frames.inc(value.frames)
                self.progress.add(episodes=1, frames=value.frames)
                continue
            if isinstance(value, rec.ClipRecord):
                self.records.inc()
            elif isinstance(value, beam.pvalue.TaggedOutput) and value.tag == REJECTED:
                self.rejected.inc()
            yield value

    def _reject(self, episode: Episode, key: str, reason: str, detail: str):
        return beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key, reason, detail,
                                                            episode.source_file, episode.source_index))

    def _episode_outputs(self, episode: Episode):
        """Everything one episode gives, ending with an `_EpisodeDone`; runs on a lane. With a resume folder, an
        episode an earlier run finished gives its kept outputs, and one made here is kept once it is complete."""
        try:
            kept = self.kept.get(episode.episode_id)
            if kept is not None:
                for tag, value in kept:
                    yield value if tag is None else beam.pvalue.TaggedOutput(tag, value)
                yield _EpisodeDone(0, resumed=True)
                return
            if self.kept.folder is None:
                yield from self._clips(episode)
                return
            outputs = list(self._clips(episode))  # the episode's clips, rejections and rows, then _EpisodeDone
            self.kept.put(episode.episode_id, [(v.tag, v.value) if isinstance(v, beam.pvalue.TaggedOutput)
                                               else (None, v) for v in outputs[:-1]])
            yield from outputs
        finally:  # lazy frames (a video window) may hand their decoder on to the next episode of the same video
            finished = getattr(episode.frames, "finished", None)
            if finished is not None:
                finished()

    def _clips(self, episode: Episode):
        c = self._config
        try:
            text = text_rules.normalize_text(episode.text, self._conditioning.max_text_chars)
        except text_rules.TextError as e:
            yield self._reject(episode, episode.episode_id, e.reason, str(e))
            return
        if self._requires_text and not text:
            yield self._reject(episode, episode.episode_id, "empty_text", "the episode's text action is empty")
            return
        controls = np.asarray(episode.controls, np.float32)
        if controls.shape != (len(episode.frames), self._control_dims):
            yield self._reject(episode, episode.episode_id, "malformed_controls",
                               f"controls have shape {list(controls.shape)}, expected "
                               f"[{len(episode.frames)}, {self._control_dims}]")
            return
        try:
            plans, fps = self._plan(episode)
        except ValueError as e:
            yield self._reject(episode, episode.episode_id, "span_out_of_range", str(e))
            return
        kept = np.concatenate([plan.frame_indices for plan in plans]) if plans else np.zeros(0, np.int32)
        if self._control_dims:
            yield beam.pvalue.TaggedOutput(CONTROL_ROWS, self._sample_rows(episode.episode_id, kept, controls))
        encoded: dict[int, bytes | frame_ops.FrameError | FrameUnavailable] = {}
        frames_done = 0
        for plan in plans:
            key = rec.clip_key(episode.episode_id, plan.clip_index)
            indices = [int(i) for i in plan.frame_indices]
            # Clips only overlap their predecessor: anything this clip does not use is never needed again.
            needed = set(indices)
            encoded = {i: v for i, v in encoded.items() if i in needed}
            clip_controls = controls[indices]
            if not np.isfinite(clip_controls).all():
                bad = sorted({indices[t] for t in np.nonzero(~np.isfinite(clip_controls).all(axis=1))[0]})
                yield self._reject(episode, key, "non_finite_control",
                                   f"NaN or infinite control at source frames {bad}")
                continue
            for i in indices:
                if i not in encoded:
                    try:
                        encoded[i] = frame_ops.process(episode.frames[i], c.frame)
                        frames_done += 1
                    except (frame_ops.FrameError, FrameUnavailable) as e:  # both carry a reason code
                        encoded[i] = e
                if isinstance(encoded[i], Exception):
                    break  # the clip is lost: decoding on (a video cut short would reopen per frame) buys nothing
            errors = [(i, encoded[i]) for i in indices if isinstance(encoded.get(i), Exception)]
            if errors:
                index, error = errors[0]
                yield self._reject(episode, key, error.reason, f"source frame {index}: {error}")
                continue
            clip_frames = [encoded[i] for i in indices]
            yield rec.ClipRecord(
                dataset=self._dataset_name, episode_id=episode.episode_id, clip_index=plan.clip_index,
                frames=clip_frames, image_format=c.frame.image_format, height=c.frame.height,
                width=c.frame.width, fps=float(fps), context_frames=plan.context_frames, text=text,
                controls=clip_controls, control_tokens=np.zeros(clip_controls.shape, np.uint16),
                conditioning_text=text_rules.conditioning_text(self._conditioning, text, clip_controls,
                                                               plan.context_frames),
                frame_indices=plan.frame_indices, is_image=episode.is_image, split=episode.split,
                source_file=episode.source_file, source_index=episode.source_index)
        yield _EpisodeDone(frames_done)

    def _plan(self, episode: Episode) -> tuple[list[clip_planning.ClipPlan], float]:
        """The episode's clips and their frame rate: successive clips, or the one clip of an annotated span."""
        c = self._config
        if episode.span is None:
            kept = clip_planning.resample_indices(len(episode.frames), episode.fps, c.fps)
            return clip_planning.plan_clips(kept, c.frames_per_clip, c.context_frames), c.fps or episode.fps
        plan, fps = clip_planning.plan_span_clip(len(episode.frames), episode.fps, episode.span, c.fps,
                                                 c.frames_per_clip, c.context_frames, c.fit_spans)
        return [plan], fps

    def _sample_rows(self, episode_id: str, kept: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row hashes, rows): the kept frames' controls, each source row once, thinned by the hash when sampling."""
        rows = np.unique(kept)
        hashes = row_hashes(episode_id, rows)
        rate = self._config.stats_sample_rate
        if rate < 1:
            keep = hashes < np.uint64(min(rate * 2.0**64, 2.0**64 - 2048))  # below 2^64 after float rounding
            rows, hashes = rows[keep], hashes[keep]
        return hashes, controls[rows]

    def teardown(self):
        if getattr(self, "lanes", None):
            self.lanes.close()
        if getattr(self, "progress", None) and self.progress.counts:
            self.progress.report()


class MakeClips(beam.PTransform):
    """Episodes → clip records with frames resized and encoded (tokens not yet set), control rows, rejections."""

    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool,
                 conditioning: text_rules.ConditioningSpec, threads: int = 1,
                 kept: resume.EpisodeStore = resume.EpisodeStore()):
        super().__init__()
        self._fn = _MakeClipsFn(config, dataset_name, control_dims, requires_text, conditioning, threads, kept)

    def expand(self, episodes):
        return episodes | "Clip" >> beam.ParDo(self._fn).with_outputs(REJECTED, CONTROL_ROWS, main="clips")


# ------------------------------------------------------------------------------------------------ controls


class _ControlStatsFn(beam.CombineFn):
    """Robust bounds over the (sampled) control rows in bounded memory (`schemas.controls.ControlSample`: exact up
    to `max_rows` rows, a hash-chosen sample above); order-independent, so reruns give equal bytes."""

    def __init__(self, names: tuple[str, ...], low_percentile: float, high_percentile: float, max_rows: int):
        self._names, self._low, self._high, self._max_rows = names, low_percentile, high_percentile, max_rows

    def create_accumulator(self):
        return ControlSample(len(self._names), self._max_rows)

    def add_input(self, accumulator, hashed_rows):
        return accumulator.add(*hashed_rows)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator.stats(self._names, self._low, self._high)


class _TokenizeFn(beam.DoFn):
    def __init__(self, spill_dir: str | None):
        self._spill_dir = spill_dir

    def setup(self):
        self.written = Metrics.counter(_NAMESPACE, "records_encoded")
        self._tokenizer: ControlTokenizer | None = None

    def start_bundle(self):
        self._spill = SpillWriter(self._spill_dir) if self._spill_dir else None

    def finish_bundle(self):
        if self._spill is not None:
            self._spill.close()

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
        yield record.key, self._spill.put(data) if self._spill else data, (record.num_frames, record.fps)
        yield beam.pvalue.TaggedOutput(TEXTS, (record.key, record.text_key, record.conditioning_text))


# ------------------------------------------------------------------------------------------------- shards


def _summarize_records(infos: list[tuple[int, float]]):
    """Per shard: (fewest frames, most frames, {fps: records}) over its records."""
    frames = [f for f, _ in infos]
    return (min(frames), max(frames), dict(collections.Counter(fps for _, fps in infos))) if infos else None


# ----------------------------------------------------------------------------------------------- manifest


class _FinishFn(beam.DoFn):
    """Fills any shard or dead-letter index that got nothing with an empty file, then writes the manifest.

    Its inputs are fixed-size summaries, one per shard or dead-letter file, never the items themselves."""

    def __init__(self, config: ConvertConfig, dataset_name: str, command: str,
                 conditioning: text_rules.ConditioningSpec, encoder_identity: dict | None, adapter: dict):
        self._config, self._dataset_name, self._command, self._adapter = config, dataset_name, command, adapter
        self._conditioning, self._encoder_identity = conditioning, encoder_identity

    def process(self, _, written, num_shards, dead_summaries, num_dead_files, stats, source_episodes, texts, altered):
        c = self._config
        dead_files, reasons = dead_letter.finish(c.output, dead_summaries, num_dead_files)
        by_index = shards.fill_missing_shards(c.output, RECORD_PREFIX, written, num_shards)
        spans = [summary for _, summary in by_index.values() if summary]
        fps_values = merge_frame_rates(sum((collections.Counter(s[2]) for s in spans), collections.Counter()))
        manifest = Manifest(
            dataset=self._dataset_name, records=sum(info.records for info, _ in by_index.values()),
            source_episodes=source_episodes, rejected=sum(reasons.values()), rejected_reasons=reasons,
            frame_height=c.frame.height, frame_width=c.frame.width, image_format=c.frame.image_format,
            fps=fps_values[0] if len(fps_values) == 1 else 0.0, fps_values=fps_values,
            frames_per_record=(min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0, 0),
            frames_per_clip=c.frames_per_clip, context_frames=c.context_frames, control_stats=stats,
            shards=[by_index[i][0] for i in sorted(by_index)], command=self._command, options=c.to_json(),
            dead_letter=dead_files,
            conditioning=self._conditioning.to_json(), text_encoder=self._encoder_identity,
            text_embeddings=texts["shards"], text_embeddings_by_record_shard=bool(texts["shards"]),
            unique_texts=texts["unique_texts"],
            encoder_calls=texts["encoder_calls"], texts_truncated=texts["texts_truncated"],
            counters={"embedding_values_clipped": texts["values_clipped"], **dict(sorted(altered.items()))},
            adapter=self._adapter)
        fileio.publish(manifest.dumps().encode("utf-8"), fileio.join(c.output, MANIFEST_NAME))
        yield manifest


# ------------------------------------------------------------------------------------------------- wiring


def build(pipeline: beam.Pipeline, config: ConvertConfig, adapter: DatasetAdapter, units: list[str], command: str,
          encoder_identity: dict | None = None, clip_threads: int = 1, spill_dir: str | None = None,
          kept: resume.EpisodeStore = resume.EpisodeStore()):
    """Adds the whole conversion to `pipeline`; returns the PCollection holding the one Manifest.

    `clip_threads` (threads making clips inside each worker, `pipelines.lanes`), `spill_dir` (local runs: a
    folder parking encoded records during the shuffle, `pipelines.spill`) and `kept` (finished episodes kept for
    a re-run, `pipelines.resume`) change speed, not output, so they are not part of the config the
    manifest records."""
    name = adapter.dataset_name
    conditioning = config.text.conditioning(name, bool(adapter.control_names))
    read = pipeline | "ReadEpisodes" >> ReadEpisodes(config, units)
    made = read.episodes | "MakeClips" >> MakeClips(config, name, len(adapter.control_names), adapter.requires_text,
                                                    conditioning, clip_threads, kept)
    stats = (made[CONTROL_ROWS]
             | "ControlStats" >> beam.CombineGlobally(
                 _ControlStatsFn(tuple(adapter.control_names), config.low_percentile, config.high_percentile,
                                 config.stats_max_rows)))
    # Tokenizing waits for the statistics of all control rows, so the clips are held until then; a dataset without
    # controls skips that wait (measured: holding 527 MiB of clips cost 2.7 s of a 35 s local run).
    tokenize = beam.ParDo(_TokenizeFn(spill_dir), beam.pvalue.AsSingleton(stats) if adapter.control_names else None)
    tokenized = made.clips | "Tokenize" >> tokenize.with_outputs(REJECTED, TEXTS, main="records")
    written, num_shards = tokenized.records | "WriteShards" >> shards.WriteShards(
        config.output, name, config.records_per_shard, RECORD_PREFIX, _summarize_records)
    settings = config.text.encoder
    texts, text_rejected = (
        tokenized[TEXTS]
        | "EmbedTexts" >> EmbedTexts(config.output, name, settings, num_shards,
                                     encoder_identity["fingerprint"] if settings else "", spill_dir))
    rejected = ((read[REJECTED], made[REJECTED], tokenized[REJECTED], written[REJECTED], text_rejected)
                | "AllRejected" >> beam.Flatten())
    dead_summaries, num_dead_files = rejected | "WriteDeadLetter" >> dead_letter.WriteDeadLetter(config.output)
    altered = (read.episodes | "AlteredEpisodes" >> beam.FlatMap(lambda episode: episode.altered)
               | "CountAltered" >> beam.combiners.Count.PerElement())  # e.g. span_end_clamped → how many
    episodes = ((read.episodes | "CountEpisodes" >> beam.combiners.Count.Globally(),
                 read[REJECTED] | "CountReadRejects" >> beam.combiners.Count.Globally())
                | "EpisodeCounts" >> beam.Flatten() | "SumEpisodes" >> beam.CombineGlobally(sum))
    return (pipeline
            | "Finish" >> beam.Create([None])
            | "WriteManifest" >> beam.ParDo(
                _FinishFn(config, name, command, conditioning, encoder_identity, adapter.describe()),
                beam.pvalue.AsList(written.shards),
                num_shards, beam.pvalue.AsList(dead_summaries), num_dead_files, beam.pvalue.AsSingleton(stats),
                beam.pvalue.AsSingleton(episodes), beam.pvalue.AsSingleton(texts), beam.pvalue.AsDict(altered)))


def pipeline_options(beam_args: list[str], runner: str, worker_processes: int = 1) -> tuple[Any, PipelineOptions]:
    """The runner object and options. Local runs use FnApiRunner (nothing downloaded): one worker in this process,
    or with `worker_processes` N >= 2, N SDK worker processes that the runner feeds in parallel."""
    if worker_processes < 1:
        raise ValueError(f"worker_processes must be >= 1, got {worker_processes}")
    options = PipelineOptions(beam_args)
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = worker_processes
        direct.direct_running_mode = "multi_processing" if worker_processes > 1 else "in_memory"
        if worker_processes > 1:
            flush_runner_data_by_size()
        return FnApiRunner(), options
    if worker_processes > 1:
        raise ValueError(f"--worker_processes is for the local runner; {runner} sizes its own workers")
    options.view_as(StandardOptions).runner = runner
    return runner, options


def flush_runner_data_by_size() -> None:
    """Works around the Beam defect that lost records in multi-worker local runs (tests/test_beam_lost_elements.py).

    With 2+ workers, FnApiRunner talks to its workers over gRPC, and its data server buffers what it sends with a
    1,000 ms periodic flush (`worker_handlers.DATA_BUFFER_TIME_LIMIT_MS`). That flush takes the buffer, sends it,
    then clears it, while `_send_input_to_worker` keeps writing chunks into the same buffer without the lock:
    chunks written during a send are cleared unsent, and the stage's elements vanish without an error. Large
    elements make the sends long, hence the losses of whole runs of clip records. Size-based flushing alone
    (what the value 0 selects, and what Beam's SDK workers use by default) has no second thread. Read when the
    runner builds its gRPC server, so it must be set before `pipeline.run()`.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What `--dry_run` built instead of running: the job's named steps and what its workers would install."""

    runner: str
    steps: list[str]  # every transform's full name, e.g. "MakeClips/Clip"
    staged: dict[str, str]  # name the workers see → local file Beam built for it (the project's sdist, …)
    units: int
    images: list[str] = dataclasses.field(default_factory=list)  # the workers' container images
    # step → its resource hints (e.g. {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}): the steps
    # Dataflow runs on other workers than the job's default
    hints: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    workers: dict[str, object] = dataclasses.field(default_factory=dict)  # machine type, disk, experiments


def is_dry_run(beam_args: list[str] | None) -> bool:
    """`--dry_run` among Beam's flags: build the whole job offline, submit nothing, write nothing."""
    return PipelineOptions(beam_args or []).view_as(TestOptions).dry_run


def run(config: ConvertConfig, beam_args: list[str] | None = None, runner: str = "local", clip_threads: int = 1,
        command: str | None = None, worker_processes: int = 1,
        keep_finished: bool = True) -> tuple[Manifest, dict[str, int]] | DryRun:
    """Converts one dataset; returns the manifest it wrote and the Beam counters of the run — or, with `--dry_run`
    in `beam_args` and a remote runner, the `DryRun` of the job it built without touching the output.

    `keep_finished`: each finished episode's outputs are kept beside the output (`pipelines/resume.py`) until the
    run completes, so that the same command run again after a failure redoes only the episodes that did not finish
    (counters `episodes_resumed` / `episodes_converted`) and writes the same bytes.

    Raises early, with a clear message, on a bad setup (unknown dataset, missing source, foreign output files).
    """
    if clip_threads < 1:
        raise ValueError(f"clip_threads must be >= 1, got {clip_threads}")
    dry_run = is_dry_run(beam_args)
    if dry_run and runner in LOCAL_RUNNERS:
        raise ValueError("--dry_run builds a job for a remote runner (e.g. --runner DataflowRunner); the local "
                         "runner has no job to build")
    adapter = registry.create(config.dataset, config.source, config.split, config.adapter_options)
    units = adapter.work_units()
    if not units:
        raise FileNotFoundError(f"{config.dataset}: found nothing to read under {config.source}")
    config.text.conditioning(adapter.dataset_name, bool(adapter.control_names))  # a bad prefix fails before any I/O
    identity = None
    if config.text.encoder is not None:  # before touching the output: a bad checkpoint path fails fast
        from unisim.encoders.t5 import encoder_identity

        identity = encoder_identity(config.text.encoder.path, config.text.encoder.max_tokens)
    kept = resume.EpisodeStore(resume.folder(config.output) if keep_finished else None)  # the dry run's job too
    if not dry_run:  # a dry run never touches the output (which may be a bucket this machine cannot reach)
        run_fingerprint = resume.fingerprint(config.to_json(), units)
        reuse = keep_finished and resume.matches(config.output, run_fingerprint)
        out.prepare_output_dir(config.output, keep=resume.RESUME_NAME if reuse else None)
        if keep_finished:
            finished = resume.start(config.output, run_fingerprint)
            kept = dataclasses.replace(kept, look=finished > 0)
            if finished:
                print(f"[convert] resuming: {finished:,} episodes finished by an earlier run of this command are "
                      f"kept; the rest are converted", file=sys.stderr)
    command = command if command is not None else shlex.join(sys.argv)
    runner_obj, options = pipeline_options(beam_args or [], runner, worker_processes)
    if dry_run:
        pipeline = beam.Pipeline(runner=runner_obj, options=options)
        build(pipeline, config, adapter, units, command, identity, clip_threads)
        return _dry_run(runner, pipeline.run(), len(units))
    spill_dir = _spill_folder(config.output) if runner in LOCAL_RUNNERS else None
    try:
        pipeline = beam.Pipeline(runner=runner_obj, options=options)
        build(pipeline, config, adapter, units, command, identity, clip_threads, spill_dir, kept)
        result = pipeline.run()
        result.wait_until_finish()
    except RuntimeError as e:
        output_error = _output_error(e)
        if output_error is None or config.output.rstrip("/") not in output_error:  # not the output's: as it was
            raise
        raise OSError(f"writing {config.output} failed, nothing was published as complete (no manifest): "
                      f"{output_error}") from None
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == _NAMESPACE}
    manifest = Manifest.loads(fileio.read_text(fileio.join(config.output, MANIFEST_NAME)))
    check_nothing_lost(config.output, manifest, counters)
    if kept.folder:
        resume.finish(config.output)
    return manifest, counters


def _output_error(error: BaseException) -> str | None:
    """The OSError a worker hit (full disk, read-only output, lost permissions) behind the runner's RuntimeError —
    found in the exception chain, or in the message, which is all a remote worker's error leaves — else None."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    message = str(error)
    for kind in ("OSError", "PermissionError", "FileNotFoundError", "IsADirectoryError"):
        if message.startswith(f"{kind}: "):
            return message[len(kind) + 2:].split(" [while running")[0]
    return None


def _dry_run(runner: str, result, units: int) -> DryRun:
    """The job a runner built in dry-run mode (DataflowRunner keeps it as `result.job`)."""
    job = getattr(result, "job", None)
    proto = getattr(job, "proto_pipeline", None)
    if proto is None:
        raise ValueError(f"--dry_run: runner {runner} built no job to show (DataflowRunner does)")
    from apache_beam.portability.api import beam_runner_api_pb2

    steps = sorted(t.unique_name for t in proto.components.transforms.values() if t.unique_name)
    staged, images, hints = {}, set(), {}
    for transform in proto.components.transforms.values():
        env = proto.components.environments.get(transform.environment_id) if transform.environment_id else None
        if env is not None and env.resource_hints:  # urn "beam:resources:accelerator:v1" → "accelerator"
            hints[transform.unique_name] = {urn.split(":")[2]: value.decode()
                                            for urn, value in env.resource_hints.items()}
    for env in proto.components.environments.values():
        if env.urn == common_urns.environments.DOCKER.urn:
            images.add(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image)
        for artifact in env.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
            staged[role.staged_name] = path
    from apache_beam.options.pipeline_options import DebugOptions, WorkerOptions

    worker, debug = job.options.view_as(WorkerOptions), job.options.view_as(DebugOptions)
    workers = {"machine_type": worker.machine_type, "disk_size_gb": worker.disk_size_gb,
               "max_num_workers": worker.max_num_workers, "experiments": sorted(debug.experiments or [])}
    return DryRun(runner=runner, steps=steps, staged=dict(sorted(staged.items())), units=units, images=sorted(images),
                  hints=dict(sorted(hints.items())), workers=workers)


def _spill_folder(output: str) -> str:
    """Inside a local output (same disk as the shards; cleared with a killed run's files), else system temp."""
    if not fileio.is_remote(output):
        return tempfile.mkdtemp(prefix=out.TMP_PREFIX + "spill-", dir=output)
    return tempfile.mkdtemp(prefix="unisim-spill-")


class LostRecordsError(RuntimeError):
    """The runner reported success but some encoded records never reached a shard."""


def check_nothing_lost(output: str, manifest: Manifest, counters: dict[str, int]) -> None:
    """Every encoded record must be in a shard or rejected as a duplicate; otherwise the output is withdrawn
    (its manifest deleted, so `inspect` and the trainer refuse it) and the run fails. Added after a local runner
    lost records (see `flush_runner_data_by_size`); records lost before encoding are not seen here."""
    encoded = counters.get("records_encoded")
    if encoded is None:  # a runner that does not report counters
        return
    reasons = manifest.rejected_reasons
    accounted = manifest.records + reasons.get("duplicate_key", 0) + reasons.get("conflicting_key", 0)
    if encoded > accounted:
        fileio.remove(fileio.join(output, MANIFEST_NAME))
        raise LostRecordsError(
            f"{encoded} records were encoded but {accounted} reached the shards or the dead letter: the runner "
            f"lost {encoded - accounted}. The output in {output} is withdrawn (no manifest); re-run it "
            "and report it: local runs use one Beam worker so that this does not happen.")
