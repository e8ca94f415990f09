"""Ordered lanes: a generator function run over a stream of items on a few threads of one process.

Why it exists: a default local run is one Beam worker (Beam 2.77's multi-worker modes lost records until the
workaround in `pipelines.beam_workarounds.flush_runner_data_by_size`; README, Reliability). The costly part of a
conversion — decode, resize, JPEG encode — runs in OpenCV, which releases the GIL, so threads inside that one worker
use the other cores without Beam's multi-worker machinery.

What it guarantees:
- outputs come back on the caller's thread (Beam's metrics and output receivers are bound to it), item by item in
  submission order, each item's outputs in the order its generator yielded them;
- memory stays bounded: each item's generator runs ahead by at most `buffer` outputs, and at most `threads × ahead`
  items are in flight; a long item (an hour of video) streams through rather than being held whole;
- items with the same affinity (a video file) run on the same lane in order while it keeps up, so a lane's parked
  decoder serves the next window of that video (`adapters.video`); a backed-up lane hands the video on to the
  least-busy lane, where items without affinity go too;
- an exception in a generator is raised on the caller's thread when that item's outputs are reached.

With one thread it runs the generator inline: no threads, no queues.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_DONE = object()
_RECENT_AFFINITIES = 256  # videos remembered per lane map; older ones may move to another lane


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class _Cancelled(Exception):
    pass


class OrderedLanes:
    def __init__(self, threads: int, work: Callable[[Any], Iterable[Any]], buffer: int = 8, ahead: int = 8):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._work, self._buffer = work, buffer
        self._threads = threads
        self._ahead = ahead
        self._max_pending = threads * ahead
        self._lanes = ([ThreadPoolExecutor(1, thread_name_prefix=f"lane{i}") for i in range(threads)]
                       if threads > 1 else [])
        self._busy = [0] * threads  # items submitted to each lane and not yet drained
        self._affinity: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self._pending: collections.deque[tuple[int, queue.Queue]] = collections.deque()
        self._cancel = threading.Event()

    def submit(self, item: Any, affinity: Hashable | None = None) -> Iterator[Any]:
        """Starts `item`; yields the outputs of the oldest items while too many are in flight."""
        if not self._lanes:
            yield from self._work(item)
            return
        lane = self._lane_for(affinity)
        outputs: queue.Queue = queue.Queue(self._buffer)
        self._busy[lane] += 1
        self._pending.append((lane, outputs))
        self._lanes[lane].submit(self._run, item, outputs)
        while len(self._pending) > self._max_pending:
            yield from self._drain_oldest()

    def drain(self) -> Iterator[Any]:
        """The outputs of every item still in flight, in order."""
        while self._pending:
            yield from self._drain_oldest()

    def close(self) -> None:
        """Stops the lanes; items still running are abandoned (their outputs dropped)."""
        self._cancel.set()
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def _lane_for(self, affinity: Hashable | None) -> int:
        if affinity is not None and affinity in self._affinity:
            self._affinity.move_to_end(affinity)
            lane = self._affinity[affinity]
            if self._busy[lane] < self._ahead:  # sticky while that lane keeps up
                return lane
        # A lane that is backed up passes the rest of its video to the least-busy lane: one video would otherwise
        # keep one thread busy and the others idle (input usually arrives a video at a time).
        lane = min(range(self._threads), key=lambda i: (self._busy[i], i))
        if affinity is not None:
            self._affinity[affinity] = lane
            if len(self._affinity) > _RECENT_AFFINITIES:
                self._affinity.popitem(last=False)
        return lane

    def _drain_oldest(self) -> Iterator[Any]:
        lane, outputs = self._pending[0]
        while True:
            value = outputs.get()
            if value is _DONE:
                break
            if isinstance(value, _Failure):
                self._pending.popleft()
                self._busy[lane] -= 1
                raise value.error
            yield value
        self._pending.popleft()
        self._busy[lane] -= 1

    def _run(self, item: Any, outputs: queue.Queue) -> None:
        try:
            for value in self._work(item):
                self._put(outputs, value)
            self._put(outputs, _DONE)
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the caller's thread, which raises it
            try:
                self._put(outputs, _Failure(e))
            except _Cancelled:
                pass

    def _put(self, outputs: queue.Queue, value: Any) -> None:
        while True:  # a bounded wait, so a closed lane set never leaves a thread blocked on a full queue
            if self._cancel.is_set():
                raise _Cancelled
            try:
                outputs.put(value, timeout=0.1)
                return
            except queue.Full:
                continue
