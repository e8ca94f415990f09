"""pipelines/lanes.py: order, affinity, bounded memory and errors of the clip threads."""

import threading
import time

import pytest

from unisim.pipelines.lanes import OrderedLanes


def _outputs(lanes, items, affinity=lambda item: None):
    got = []
    for item in items:
        got.extend(lanes.submit(item, affinity(item)))
    got.extend(lanes.drain())
    return got


def test_outputs_come_back_in_submission_order_whatever_the_finishing_order():
    def work(item):
        time.sleep(0.02 * (item % 3))  # later items often finish first
        for part in range(3):
            yield (item, part)

    lanes = OrderedLanes(3, work)
    assert _outputs(lanes, range(12)) == [(item, part) for item in range(12) for part in range(3)]
    lanes.close()


def _threads_per_video(ahead: int, items: list[tuple[str, int]]) -> dict[str, list[tuple[int, str]]]:
    seen: dict[str, list[tuple[int, str]]] = {}

    def work(item):
        video, index = item
        seen.setdefault(video, []).append((index, threading.current_thread().name))
        time.sleep(0.005)
        yield item

    lanes = OrderedLanes(2, work, ahead=ahead)
    assert _outputs(lanes, items, affinity=lambda item: item[0]) == items
    lanes.close()
    return seen


def test_items_with_one_affinity_stay_on_one_thread_in_order_while_it_keeps_up():
    items = [(video, index) for index in range(5) for video in ("a", "b", "c")]
    seen = _threads_per_video(ahead=16, items=items)
    for video, runs in seen.items():
        assert [index for index, _ in runs] == list(range(5))
        assert len({thread for _, thread in runs}) == 1, video
    assert len({runs[0][1] for runs in seen.values()}) == 2  # the three videos are spread over both threads


def test_a_backed_up_lane_hands_its_video_on():
    # One video arriving item after item (as a work unit delivers it) must not keep the other thread idle.
    seen = _threads_per_video(ahead=2, items=[("a", index) for index in range(12)])
    threads = [thread for _, thread in seen["a"]]
    assert len(set(threads)) == 2 and min(threads.count(t) for t in set(threads)) >= 3


def test_a_long_item_streams_instead_of_running_ahead_unbounded():
    produced = []

    def work(item):
        for i in range(1000):
            produced.append(i)
            yield i

    lanes = OrderedLanes(2, work, buffer=8)
    stream = lanes.drain()
    assert list(lanes.submit("long")) == []  # in flight, nothing forced out yet
    time.sleep(0.2)
    assert len(produced) <= 8 + 1  # the generator waits for the consumer: the queue bound, plus the one it holds
    assert list(stream) == list(range(1000))
    lanes.close()


def test_an_error_in_a_lane_is_raised_to_the_caller_after_the_earlier_outputs():
    def work(item):
        if item == 2:
            raise ValueError("item 2 is bad")
        yield item

    lanes = OrderedLanes(2, work)
    got = []
    with pytest.raises(ValueError, match="item 2 is bad"):
        for item in range(6):
            got.extend(lanes.submit(item))
        got.extend(lanes.drain())
    assert got == [0, 1]
    lanes.close()  # returns although later items may still be blocked on their full queues


def test_one_thread_runs_inline():
    lanes = OrderedLanes(1, lambda item: iter([threading.current_thread().name]))
    assert _outputs(lanes, [1, 2]) == [threading.current_thread().name] * 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OrderedLanes(0, lambda item: iter(()))
