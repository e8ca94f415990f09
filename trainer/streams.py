"""Which records each training process reads, in which order, and where a run stands in them — in terms that survive
a change of the number of processes (issue 31: resume a run on a different number of hosts).

    a source's shards ─▶ this process's `Share` (whole shards) ─▶ its `Stream`: the carried-over records first,
                         then epoch after epoch, each a fresh permutation of the share

A run is a chain of `Layout`s: H processes from step 0, then H′ from the step it was resumed at with H′, and so on.
Within a layout every process reads the same number of records of each source at every step (same mixture, same
local batch), so where a source stands is one count per layout, computed from the step (`mixture_counts`). When
the process count changes, what the processes sharing a share had not yet read of their current epoch
(`unread`) is *carried over*: each new process reads the carried records of its new shards first, shuffled, then
starts fresh epochs. So no record of an epoch in progress is read twice or skipped, per source, and every process
keeps mixing by the weights. Epochs stay per share, as before: processes whose shares differ in size run through
their epochs at different rates, with or without a resume.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from unisim.schemas.errors import UserError

ENDLESS = 2**62  # length of an endless index stream (grain datasets need a length)
PERMUTATION_LIMIT = 1 << 24  # sources up to this many records keep a permutation array per epoch (64 MiB at most)
LAYOUT_SEED_STRIDE = 1 << 20  # epoch seeds of layout m start m × this above layout 0's: new orders after a resume


class LayoutError(UserError):
    """A resume on a different number of processes that cannot keep the epoch's guarantee: says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Share:
    """The part of one source that one training process reads: whole shards, so that a host fetches (or, through a
    FUSE mount, touches) only its own shards — O(source / processes) of disk and network per host.

    With at least as many non-empty shards as processes, process p reads shards p, p + H, p + 2H, … of the H
    processes, alone. With fewer shards than processes, processes share a shard: `readers` of them read shard
    p mod n, taking interleaved positions of its stream (`rank` is this one's place among them)."""

    shards: tuple[int, ...]  # indices into the manifest's `shards`
    rank: int = 0
    readers: int = 1


def host_share(records_per_shard: Sequence[int], process_index: int, process_count: int) -> Share:
    """This process's `Share` of a source whose shards hold `records_per_shard` records (empty shards skipped)."""
    from unisim.trainer.data import MixtureError

    if not 0 <= process_index < process_count:
        raise ValueError(f"process {process_index} of {process_count}")
    filled = [i for i, records in enumerate(records_per_shard) if records > 0]
    if not filled:
        raise MixtureError("the source holds no records")
    if len(filled) >= process_count:
        return Share(tuple(filled[process_index::process_count]))
    shard = process_index % len(filled)
    return Share((filled[shard],), rank=process_index // len(filled),
                 readers=len(range(shard, process_count, len(filled))))


def _in_epochs(j: int, length: int, seed: int) -> int:
    """Record index at position `j` of the share's epochs (all readers' positions together): epoch after epoch, each
    a fresh permutation of the share.

    Up to `PERMUTATION_LIMIT` records the epoch's permutation is an int32 array made once (grain's `index_shuffle`,
    evaluated per element, took 15 % of the loader's time at 24×40); larger sources (LAION's 400M) use
    `index_shuffle`, which needs no memory."""
    epoch, within = divmod(j, length)
    epoch_seed = (seed + epoch) % 2**32
    if length <= PERMUTATION_LIMIT:
        return int(_permutation(length, epoch_seed)[within])
    from grain.experimental import index_shuffle

    return index_shuffle(within, max_index=length - 1, seed=epoch_seed, rounds=4)


@functools.lru_cache(maxsize=8)  # a few sources × the current and next epoch
def _permutation(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(length).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Stream:
    """One process's endless index stream over its share of one source (a callable: position → record index in the
    share): the `carry` first (the readers of the share interleaving it), then epochs of the share from `seed`."""

    length: int  # records in the share
    seed: int
    rank: int = 0
    readers: int = 1
    carry: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64), compare=False)

    def __call__(self, position: int) -> int:
        j = position * self.readers + self.rank
        if j < len(self.carry):
            return int(self.carry[j])
        return _in_epochs(j - len(self.carry), self.length, self.seed)

    def unread(self, consumed: int) -> np.ndarray:
        """Share indices of the epoch in progress that no reader has read after each read `consumed` positions."""
        j = consumed * self.readers  # every reader of the share is at the same count
        if j < len(self.carry):
            return self.carry[j:]
        epoch, within = divmod(j - len(self.carry), self.length)
        if within == 0:  # at an epoch's boundary: nothing of it is read yet, nothing to carry
            return np.zeros(0, np.int64)
        if self.length > PERMUTATION_LIMIT:
            raise LayoutError(f"a share of {self.length:,} records (more than {PERMUTATION_LIMIT:,}) is past what the "
                              "carry-over lists")
        return _permutation(self.length, (self.seed + epoch) % 2**32)[within:].astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Layout:
    """`processes` training processes from `start_step` on (until the next layout's start)."""

    processes: int
    start_step: int


def mix_positions(weights: Sequence[float]):
    """The mixture's order: position → (source, position in that source's stream), grain's weighted mix. The
    training input mixes its sources with this same call."""
    import grain

    components = [grain.MapDataset.range(ENDLESS).map(functools.partial(_tagged, i)) for i in range(len(weights))]
    return grain.MapDataset.mix(components, list(np.asarray(weights, np.float64) / np.sum(weights)))


def _tagged(source: int, position: int) -> tuple[int, int]:
    return source, position


def mixture_counts(weights: Sequence[float], items: int) -> np.ndarray:
    """How many records of each source the first `items` positions of the mixture take (its order is periodic, so
    scanning back from the last position finds every source within one period)."""
    mix, counts, found = mix_positions(weights), np.zeros(len(weights), np.int64), set()
    for position in range(items - 1, -1, -1):
        source, k = mix[position]
        if source not in found:
            counts[source], found = k + 1, found | {source}
            if len(found) == len(weights):
                break
    return counts


def plan(records_per_shard: Sequence[Sequence[int]], weights: Sequence[float], global_batch: int,
         layouts: Sequence[Layout], process_index: int, seed: int) -> list[tuple[Share, Stream]]:
    """(share, stream) of each source for process `process_index` of the last of `layouts` (the run's chain, oldest
    first; one layout for a run never resumed on another count). `seed` is the input's seed."""
    return [_plan_source(tuple(shards), tuple(weights), global_batch, tuple(layouts), process_index,
                         seed * 1000 + i, i)
            for i, shards in enumerate(records_per_shard)]


def _plan_source(shards: tuple[int, ...], weights: tuple[float, ...], global_batch: int, layouts: tuple[Layout, ...],
                 process: int, seed: int, source: int) -> tuple[Share, Stream]:
    layout, m = layouts[-1], len(layouts) - 1
    share = host_share(shards, process, layout.processes)
    carry = np.zeros(0, np.int64)
    if m > 0:
        unread = _unread_globally(shards, weights, global_batch, layouts, source, seed)
        local = np.flatnonzero(np.isin(_global_indices(shards, share), unread))  # the carried records, share order
        carry = np.random.default_rng([seed, m]).permutation(local)
    length = sum(shards[s] for s in share.shards)
    return share, Stream(length, seed + m * LAYOUT_SEED_STRIDE, share.rank, share.readers, carry)


@functools.lru_cache(maxsize=16)  # each process of a layout asks for the same one
def _unread_globally(shards: tuple[int, ...], weights: tuple[float, ...], global_batch: int,
                     layouts: tuple[Layout, ...], source: int, seed: int) -> np.ndarray:
    """Global record indices (shard offset + index) of the source that the previous layout's processes had not yet
    read of their epochs in progress, at the step the last layout starts."""
    previous, now = layouts[-2], layouts[-1]
    if global_batch % previous.processes:
        raise LayoutError(f"the batch {global_batch} does not split over {previous.processes} processes")
    items = (now.start_step - previous.start_step) * (global_batch // previous.processes)
    consumed = int(mixture_counts(weights, items)[source])
    unread, seen = [], set()
    for p in range(previous.processes):
        share, stream = _plan_source(shards, weights, global_batch, layouts[:-1], p, seed, source)
        if share.shards in seen:  # its readers hold one stream between them
            continue
        seen.add(share.shards)
        unread.append(_global_indices(shards, share)[stream.unread(consumed)])
    return np.concatenate(unread) if unread else np.zeros(0, np.int64)


def _global_indices(shards: tuple[int, ...], share: Share) -> np.ndarray:
    """The source-wide index (shard offset + index in the shard) of each record of `share`, in share order."""
    offsets = np.concatenate([[0], np.cumsum(shards)])
    return np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in share.shards])
