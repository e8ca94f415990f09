"""trainer/streams.py: which records each process reads — shares, epochs, and a resume on another process count
(2 → 1, 1 → 2, 2 → 3, 2 → 1 → 2) reading every record of the epoch in progress once, per source."""

import numpy as np
import pytest

from unisim.trainer import streams
from unisim.trainer.streams import Layout


def test_each_epoch_is_a_new_permutation_split_between_processes():
    length = 10
    index = lambda position, process: streams.Stream(length, seed=3, rank=process, readers=2)(position)  # noqa: E731
    for epoch in range(3):
        seen = [index(epoch * 5 + k, p) for p in range(2) for k in range(5)]
        assert sorted(seen) == list(range(length))  # both processes together cover the epoch once
    first, second = [index(k, 0) for k in range(5)], [index(5 + k, 0) for k in range(5)]
    assert first != second
    # Past PERMUTATION_LIMIT the same contract holds through grain's index_shuffle (no array).
    big = streams.PERMUTATION_LIMIT + 5
    seen = {streams.Stream(big, seed=1)(k) for k in range(1000)}
    assert len(seen) == 1000 and max(seen) < big


def test_each_process_reads_whole_shards_of_its_own():
    assert streams.host_share([2, 2, 0, 2, 1, 2], 0, 2) == streams.Share((0, 3, 5))  # the empty shard 2 is skipped
    assert streams.host_share([2, 2, 0, 2, 1, 2], 1, 2) == streams.Share((1, 4))
    # Fewer shards than processes: processes share a shard and interleave its stream.
    shares = [streams.host_share([3, 3], p, 5) for p in range(5)]
    assert shares == [streams.Share((0,), 0, 3), streams.Share((1,), 0, 2), streams.Share((0,), 1, 3),
                      streams.Share((1,), 1, 2), streams.Share((0,), 2, 3)]
    with pytest.raises(ValueError):
        streams.host_share([1], 2, 2)



SHARDS = [[5] * 6, [4, 4]]  # source A: 6 shards of 5 records; source B: 2 shards of 4 (fewer shards than 3 processes)
WEIGHTS = (3.0, 1.0)
BATCH = 12  # splits over 1, 2 and 3 processes


def _reads(layouts, steps):
    """{process: [[global record index read, in order] per source]} for `steps` steps of the last layout."""
    layout, mix = layouts[-1], streams.mix_positions(WEIGHTS)
    reads = {}
    for p in range(layout.processes):
        planned = streams.plan(SHARDS, WEIGHTS, BATCH, layouts, p, seed=7)
        reads[p] = [[] for _ in SHARDS]
        for n in range(steps * BATCH // layout.processes):
            i, k = mix[n]
            share, stream = planned[i]
            offsets = np.cumsum([0] + SHARDS[i])
            mine = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in share.shards])
            reads[p][i].append(int(mine[stream(k)]))
    return reads


def _epoch_in_progress(layouts, steps, source):
    """What the processes of a layout never resumed before read of their epoch in progress (readers of one share
    merged; each share's completed epochs dropped)."""
    groups = {}
    for p, per_source in _reads(layouts, steps).items():
        share, _ = streams.plan(SHARDS, WEIGHTS, BATCH, layouts, p, seed=7)[source]
        groups.setdefault(share.shards, []).extend(per_source[source])
    length = lambda shards: sum(SHARDS[source][s] for s in shards)  # noqa: E731
    return [r for shards, reads in groups.items() for r in reads[len(reads) // length(shards) * length(shards):]]


def _carried_reads(layouts, steps, source):
    """What each process of the last layout reads of its carry-over, in `steps` steps (all of it if it has time)."""
    out = []
    for p, per_source in _reads(layouts, steps).items():
        share, stream = streams.plan(SHARDS, WEIGHTS, BATCH, layouts, p, seed=7)[source]
        mine = max(0, -(-(len(stream.carry) - stream.rank) // stream.readers))  # positions rank, rank + R, … < c
        out += per_source[source][:mine]
    return out


@pytest.mark.parametrize("before, after, steps", [(2, 1, 2), (1, 2, 3), (2, 3, 3), (3, 2, 1)])
def test_a_resume_on_another_process_count_reads_the_rest_of_the_epoch_once(before, after, steps):
    layouts = (Layout(before, 0), Layout(after, steps))
    for source, shards in enumerate(SHARDS):
        read_before = _epoch_in_progress(layouts[:1], steps, source)
        carried = _carried_reads(layouts, 8, source)
        if read_before or source == 0:  # source A: the change falls inside its epoch (B's may end right there)
            assert sorted(read_before + carried) == list(range(sum(shards))), (source, read_before, carried)
        else:
            assert carried == []  # at the epoch's boundary: nothing to carry


def test_a_second_change_carries_what_the_first_had_not_finished():
    layouts = (Layout(2, 0), Layout(1, 1), Layout(2, 2))  # the 1-process layout reads some of its carry-over only
    for source, shards in enumerate(SHARDS):
        read_first = _epoch_in_progress(layouts[:1], 1, source)
        read_middle = [r for rs in _reads(layouts[:2], 1).values() for r in rs[source]]
        carried = _carried_reads(layouts, 8, source)
        assert sorted(read_first + read_middle + carried) == list(range(sum(shards))), source


def test_after_the_carry_over_each_process_reads_fresh_epochs_and_the_weights_hold():
    layouts = (Layout(2, 0), Layout(1, 2))
    carry = [len(stream.carry) for _, stream in streams.plan(SHARDS, WEIGHTS, BATCH, layouts, 0, seed=7)]
    reads = _reads(layouts, 8)[0]
    for source, shards in enumerate(SHARDS):
        after = reads[source][carry[source]:carry[source] + sum(shards)]
        assert sorted(after) == list(range(sum(shards)))  # one whole epoch of the (now whole) source
    counts = streams.mixture_counts(WEIGHTS, 8 * BATCH)
    assert counts.tolist() == [len(r) for r in reads] == [72, 24]


def test_what_cannot_be_carried_is_refused_with_the_reason():
    with pytest.raises(streams.LayoutError, match="does not split over 5 processes"):
        streams.plan(SHARDS, WEIGHTS, BATCH, (Layout(5, 0), Layout(1, 3)), 0, seed=7)
    huge = streams.Stream(streams.PERMUTATION_LIMIT + 1, seed=0)
    with pytest.raises(streams.LayoutError, match="more than"):
        huge.unread(3)
