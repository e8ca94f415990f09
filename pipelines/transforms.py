"""The convert pipeline's steps and their wiring (`build`): a dataset's official release → validated clip records
in ArrayRecord shards + manifest. Running it is `pipelines.convert`; its options, `pipelines.config`.

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
(`pipelines.embed`). The clip step, the costly one, is `pipelines.clip_step`.
"""

from __future__ import annotations

import collections
import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from unisim import fileio
from unisim.adapters import registry
from unisim.adapters.base import DatasetAdapter
from unisim.pipelines import dead_letter
from unisim.pipelines import resume, shards
from unisim.pipelines.clip_step import CONTROL_ROWS, MakeClips
from unisim.pipelines.config import ConvertConfig
from unisim.pipelines.embed import EmbedTexts
from unisim.pipelines.spill import SpillWriter
from unisim.schemas import record as rec
from unisim.schemas import text as text_rules
from unisim.schemas.controls import ControlSample, ControlStats, ControlTokenizer
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.manifest import MANIFEST_NAME, RECORD_PREFIX, Manifest, merge_frame_rates
from unisim.schemas.text_embeddings import EncoderIdentity

REJECTED = shards.REJECTED
TEXTS = "texts"
_NAMESPACE = shards.NAMESPACE


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
                 conditioning: text_rules.ConditioningSpec, encoder_identity: EncoderIdentity | None, adapter: dict):
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
          encoder_identity: EncoderIdentity | None = None, clip_threads: int = 1, spill_dir: str | None = None,
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
                                     encoder_identity, spill_dir))
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

