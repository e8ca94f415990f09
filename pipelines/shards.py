"""Writing keyed items into a deterministic set of ArrayRecord shards (clip records, text embeddings).

Items are (key, bytes, info). The shard count is ceil(items / per_shard); an item's shard is a hash of its key and
items are sorted by key inside a shard, so the output bytes depend neither on worker count nor on bundle order.
A key seen twice with the same bytes is written once and the extras are rejected ("duplicate_key"); items that
share a key with different bytes are all rejected ("conflicting_key": no record may stand for another under its
key, and which one is right cannot be told here). Shard indices that received no
item are filled with empty shards at the end (`fill_missing_shards`), so the set is always complete.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from unisim import fileio
from unisim.pipelines import output as out
from unisim.pipelines.spill import SpillReader
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.manifest import ShardInfo, shard_name
from unisim.schemas.text_embeddings import keys_path

REJECTED = "rejected"
NAMESPACE = "unisim"


def hash_unit(text: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64


def shard_of(key: str, num_shards: int) -> int:
    return int(hash_unit(key) * num_shards)


def count_groups(items, per_group: int, label: str):
    """A singleton side input: ceil(len(items) / per_group), at least 1."""
    return beam.pvalue.AsSingleton(
        items
        | f"Count{label}" >> beam.combiners.Count.Globally()
        | f"Num{label}" >> beam.Map(lambda n, per: max(1, math.ceil(n / per)), per_group))


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, dataset_name: str, prefix: str, write_keys: bool, summarize: Callable):
        self._output, self._dataset_name, self._prefix, self._write_keys = output, dataset_name, prefix, write_keys
        self._summarize = summarize

    def setup(self):
        self.shards = Metrics.counter(NAMESPACE, f"{self._prefix}_shards_written")
        self.duplicates = Metrics.counter(NAMESPACE, "rejected_duplicates")
        self.conflicts = Metrics.counter(NAMESPACE, "rejected_conflicting_keys")

    def process(self, element, num_shards: int):
        index, items = element
        with SpillReader() as spilled:  # an item's bytes may be parked in a spill file (`pipelines.spill`)
            unique = []
            for key, group in itertools.groupby(sorted(items, key=lambda item: item[0]), key=lambda item: item[0]):
                group = list(group)
                if len(group) > 1:
                    contents = {hashlib.sha256(spilled.read(item[1])).hexdigest() for item in group}
                    if len(contents) > 1:  # different items under one key: none is kept
                        detail = (f"{len(group)} items share this key with {len(contents)} different contents "
                                  f"(sha256 {', '.join(sorted(c[:12] for c in contents))}): none is written")
                        for _ in group:
                            self.conflicts.inc()
                            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key,
                                                                               "conflicting_key", detail))
                        continue
                    for _ in group[1:]:  # the same item again: written once
                        self.duplicates.inc()
                        yield beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key, "duplicate_key",
                                                                           "an identical item has the same key"))
                unique.append(group[0])
            name = shard_name(index, num_shards, self._prefix)
            count, size, digest = out.write_shard((spilled.read(data) for _, data, _ in unique),
                                          fileio.join(self._output, name))
        if self._write_keys:
            fileio.publish("".join(f"{key}\n" for key, _, _ in unique).encode(),
                              fileio.join(self._output, keys_path(name)))
        self.shards.inc()
        yield (index, ShardInfo(path=name, records=count, bytes=size, sha256=digest),
               self._summarize([info for _, _, info in unique]))


class WriteShards(beam.PTransform):
    """(key, bytes or SpillRef, info) → shards `<prefix>-NNNNN-of-NNNNN.array_record` (+ `.keys` files if `write_keys`).

    Items go to shard `shard_of(key)` of ceil(items / per_shard) — or, given `num_shards` (a singleton side input),
    arrive as (shard index, item) already placed (the text-embedding store follows the record shards that way).
    Returns (shards, num_shards): `shards` has a main output of (index, ShardInfo, summarize([info, …])) — a
    per-shard summary keeps the final step's side input small — and a `rejected` output; `num_shards` is a
    singleton side input for `fill_missing_shards`.
    """

    def __init__(self, output: str, dataset_name: str, per_shard: int | None, prefix: str, summarize: Callable,
                 write_keys: bool = False, num_shards=None):
        super().__init__()
        if (per_shard is None) == (num_shards is None):
            raise ValueError("WriteShards needs one of per_shard or num_shards")
        self._output, self._dataset_name, self._per_shard = output, dataset_name, per_shard
        self._prefix, self._write_keys, self._summarize = prefix, write_keys, summarize
        self._num_shards = num_shards

    def expand(self, items):
        if self._num_shards is None:
            num_shards = count_groups(items, self._per_shard, "Items")
            items = items | "AssignShard" >> beam.Map(lambda item, n: (shard_of(item[0], n), item), num_shards)
        else:
            num_shards = self._num_shards
        written = (items
                   | "GroupByShard" >> beam.GroupByKey()
                   | "Write" >> beam.ParDo(_WriteShardFn(self._output, self._dataset_name, self._prefix,
                                                         self._write_keys, self._summarize), num_shards)
                   .with_outputs(REJECTED, main="shards"))
        return written, num_shards


def fill_missing_shards(output: str, prefix: str, shards: list[tuple[int, ShardInfo, Any]], num_shards: int,
                        write_keys: bool = False) -> dict[int, tuple[ShardInfo, Any]]:
    """index → (ShardInfo, summary) for all `num_shards`, writing an empty shard (summary None) where no item went."""
    by_index = {index: (info, infos) for index, info, infos in shards}
    for index in range(num_shards):
        if index not in by_index:
            name = shard_name(index, num_shards, prefix)
            count, size, digest = out.write_shard([], fileio.join(output, name))
            if write_keys:
                fileio.publish(b"", fileio.join(output, keys_path(name)))
            by_index[index] = (ShardInfo(name, count, size, digest), None)
    return by_index
