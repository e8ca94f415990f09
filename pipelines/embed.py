"""The text stage: conditioning texts → each unique text embedded once → the text-embedding store.

    (record key, text_key, text) per record ─UniqueTexts─▶ one per key ─Batch─▶ fixed batches ─Encode─▶ entries
                     └─ (text_key, record shard) ─Distinct─────────────────────────────┴─JoinNeeds─▶ WriteShards

The store follows the record shards: embedding shard j holds the entry of every text that record shard j uses, so a
training host that reads record shards i..k needs embedding shards i..k and nothing else (`trainer.data`). A text
used by records in several shards is stored once in each of them (LAION-style data, one text per record, stores
each once; a label shared by every shard is stored once per shard); it is still encoded once.

Deduplication is a combine per key (lifted, so repeats collapse on the worker that saw them before any shuffle).
Batches are formed deterministically — unique texts are spread over ceil(unique / batch_size) groups by key hash,
and each group is sorted by (length, key) and cut into batch_size chunks — rather than by Beam's RunInference,
whose BatchElements sizes batches by measured time: a padded batch's float results depend on its composition,
and output bytes must not depend on timing. The model is loaded once per worker process (`Shared`) in `setup`.
"""

from __future__ import annotations

import dataclasses
import threading

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from unisim.pipelines import shards
from unisim.pipelines.spill import SpillWriter
from unisim.schemas.options import option
from unisim.schemas.text_embeddings import EMBEDDING_PREFIX, EncoderIdentity, encode_entry


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    path: str = option(help="T5 checkpoint directory in transformers format, local or gs:// (without it texts are "
                            "written and counted but not embedded)", flag="text_encoder", metavar="PATH")
    max_tokens: int = option(64, "encoder tokens per text, EOS included", flag="text_max_tokens")
    batch_size: int = option(32, "texts per encoder forward pass", flag="text_batch_size")
    device: str = option("cpu", "torch device for the encoder: cpu, cuda, or auto (cuda where the worker has one)",
                         flag="text_encoder_device")
    accelerator: str | None = option(
        None, "Beam resource hint for the encoding step alone, e.g. 'type:nvidia-l4;count:1;install-nvidia-driver': "
              "on Dataflow that step runs on GPU workers, and the encoder uses cuda there (device auto)",
        flag="text_encoder_accelerator", metavar="HINT")
    threads: int | None = option(None, "torch intra-op threads per worker process (none: torch's default)",
                                 flag="text_encoder_threads")

    def __post_init__(self):
        if self.max_tokens < 2:
            raise ValueError("text max_tokens must be >= 2 (one text token and EOS)")
        if self.batch_size < 1:
            raise ValueError("text batch_size must be >= 1")
        if self.accelerator is not None and not self.accelerator.startswith("type:"):
            raise ValueError(f"text encoder accelerator {self.accelerator!r}: a Beam accelerator hint starts with "
                             "'type:', e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'")

    def torch_device(self) -> str:
        """The device the encoder runs on in this process: `device`, with auto (or an accelerator hint beside the
        default cpu) meaning cuda where torch sees a GPU."""
        if self.device == "auto" or (self.accelerator and self.device == "cpu"):
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


class _DistinctTexts(beam.CombineFn):
    """The distinct texts under one key: exactly one, unless the 128-bit key collides (then the run fails loudly)."""

    def create_accumulator(self):
        return set()

    def add_input(self, accumulator, text):
        accumulator.add(text)
        return accumulator

    def merge_accumulators(self, accumulators):
        return set().union(*accumulators)

    def extract_output(self, accumulator):
        texts = sorted(accumulator)
        if len(texts) != 1:
            raise ValueError(f"text key collision between {texts[:2]!r}: widen schemas.record.text_key")
        return texts[0]


def batches(pairs, batch_size: int) -> list[list[tuple[str, str]]]:
    """(key, text) pairs → encoder batches: sorted by (length, key) so similar lengths share padding, then cut.

    Deterministic for a given set of pairs, whatever order they arrive in.
    """
    ordered = sorted(pairs, key=lambda kv: (len(kv[1]), kv[0]))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


class _LockedEncoder:
    """One encoder per process, shared by the DoFn threads of that process; forward passes take turns."""

    def __init__(self, settings: EncoderSettings, identity: EncoderIdentity):
        from unisim.encoders.t5 import T5TextEncoder, check_encoder

        # The manifest names the launcher's encoder: it must be the one that ran here.
        check_encoder(settings.path, identity, "the one the run started with (it changed since)")
        self.encoder = T5TextEncoder(settings.path, settings.max_tokens, settings.torch_device(), settings.threads)
        self.lock = threading.Lock()


class _EncodeFn(beam.DoFn):
    def __init__(self, settings: EncoderSettings, identity: EncoderIdentity, spill_dir: str | None = None):
        self._settings, self._identity, self._spill_dir = settings, identity, spill_dir
        self._shared = shared.Shared()

    def start_bundle(self):
        # Local runs park each entry in a spill file (`pipelines.spill`): at d_model 4096 an entry is ~85 kB, and the
        # local runner holds every element between stages in memory.
        self._spill = SpillWriter(self._spill_dir) if self._spill_dir else None

    def finish_bundle(self):
        if self._spill is not None:
            self._spill.close()

    def setup(self):
        self._handle = self._shared.acquire(lambda: _LockedEncoder(self._settings, self._identity))
        self.inputs = Metrics.counter(shards.NAMESPACE, "encoder_inputs")
        self.batches = Metrics.counter(shards.NAMESPACE, "encoder_batches")
        self.truncated = Metrics.counter(shards.NAMESPACE, "texts_truncated")

    def process(self, element):
        _, pairs = element
        for chunk in batches(pairs, self._settings.batch_size):
            with self._handle.lock:
                entries = self._handle.encoder.encode([k for k, _ in chunk], [t for _, t in chunk])
            self.inputs.inc(len(chunk))
            self.batches.inc()
            for entry in entries:
                self.truncated.inc(int(entry.truncated))
                data = encode_entry(entry)
                yield (entry.key, self._spill.put(data) if self._spill else data,
                       (int(entry.truncated), entry.values_clipped))


def _summarize_entries(infos: list[tuple[int, int]]) -> None:
    return None  # per-text counts are summed once per text (`_sum_counts`), not per stored copy


def _sum_counts(infos) -> tuple[int, int]:
    return sum(t for t, _ in infos), sum(c for _, c in infos)


def _place(joined):
    """(text key, {"entry": [the encoded entry], "shard": [record shards using it]}) → (shard, entry) per shard."""
    _, groups = joined
    (entry,) = groups["entry"]  # a text used by a record always has exactly one entry
    for shard in sorted(set(groups["shard"])):
        yield shard, entry


class _SummaryFn(beam.DoFn):
    def __init__(self, output: str):
        self._output = output

    def process(self, _, written, num_shards, unique_texts, encoder_calls, counts):
        by_index = shards.fill_missing_shards(self._output, EMBEDDING_PREFIX, written, num_shards, write_keys=True)
        truncated, clipped = counts
        yield {"shards": [by_index[i][0] for i in sorted(by_index)], "unique_texts": unique_texts,
               "encoder_calls": encoder_calls, "texts_truncated": truncated, "values_clipped": clipped}


class EmbedTexts(beam.PTransform):
    """(record key, text_key, conditioning_text) per record → a one-element summary (shards, unique_texts, …).

    `record_shards` is the record shard count (a singleton side input): the store has as many shards, aligned with
    them, embedded by the encoder `settings` loads, which must be `identity` (the one the manifest records). With
    `settings` None (no --text_encoder) texts are only counted. Also returns the rejected items (only
    duplicate keys, which deduplication makes impossible, could land there).
    """

    def __init__(self, output: str, dataset_name: str, settings: EncoderSettings | None, record_shards,
                 identity: EncoderIdentity | None = None, spill_dir: str | None = None):
        super().__init__()
        self._output, self._dataset_name, self._settings = output, dataset_name, settings
        self._record_shards, self._identity, self._spill_dir = record_shards, identity, spill_dir

    def _encode(self) -> beam.ParDo:
        encode = beam.ParDo(_EncodeFn(self._settings, self._identity, self._spill_dir))
        if self._settings.accelerator:  # this step only: the rest of the job keeps its CPU workers
            encode = encode.with_resource_hints(accelerator=self._settings.accelerator)
        return encode

    def expand(self, uses):
        pipeline = uses.pipeline
        uses = uses | "DropEmpty" >> beam.Filter(lambda use: use[1] != "")
        unique = (uses
                  | "Texts" >> beam.Map(lambda use: (use[1], use[2]))
                  | "UniqueTexts" >> beam.CombinePerKey(_DistinctTexts()))
        unique_count = beam.pvalue.AsSingleton(unique | "CountUnique" >> beam.combiners.Count.Globally())
        if self._settings is None:
            summary = (pipeline | "NoEncoder" >> beam.Create([None])
                       | "Summary" >> beam.Map(lambda _, n: {"shards": [], "unique_texts": n, "encoder_calls": 0,
                                                             "texts_truncated": 0, "values_clipped": 0}, unique_count))
            return summary, pipeline | "NoRejects" >> beam.Create([])
        num_batches = shards.count_groups(unique, self._settings.batch_size, "Batches")
        encoded = (unique
                   | "AssignBatch" >> beam.Map(lambda kv, n: (shards.shard_of(kv[0], n), kv), num_batches)
                   | "GroupBatches" >> beam.GroupByKey()
                   | "Encode" >> self._encode())
        needs = (uses
                 | "RecordShard" >> beam.Map(lambda use, n: (use[1], shards.shard_of(use[0], n)), self._record_shards)
                 | "DistinctNeeds" >> beam.Distinct())
        placed = ({"entry": encoded | "ByKey" >> beam.Map(lambda entry: (entry[0], entry)), "shard": needs}
                  | "JoinNeeds" >> beam.CoGroupByKey()
                  | "Place" >> beam.FlatMap(_place))
        written, num_shards = placed | "WriteShards" >> shards.WriteShards(
            self._output, self._dataset_name, None, EMBEDDING_PREFIX, _summarize_entries, write_keys=True,
            num_shards=self._record_shards)
        encoder_calls = beam.pvalue.AsSingleton(encoded | "CountEncoded" >> beam.combiners.Count.Globally())
        counts = beam.pvalue.AsSingleton(encoded | "Counts" >> beam.Map(lambda entry: entry[2])
                                         | "SumCounts" >> beam.CombineGlobally(_sum_counts))
        summary = (pipeline | "Finish" >> beam.Create([None])
                   | "Summary" >> beam.ParDo(_SummaryFn(self._output), beam.pvalue.AsList(written.shards), num_shards,
                                             unique_count, encoder_calls, counts))
        return summary, written[shards.REJECTED]
