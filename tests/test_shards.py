"""pipelines/shards.py with spill files (pipelines/spill.py): the same shard bytes whether records travel as bytes or
as references; a key repeated with the same bytes written once, with different bytes not at all, either way."""

import os

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from unisim.pipelines import shards
from unisim.pipelines.spill import SpillReader, SpillRef, SpillWriter

ITEMS = [(f"k{i:03d}", f"record {i}".encode() * (i + 1), i) for i in range(40)]
DUPLICATES = [("k007", b"a different item", 7), ("k011", ITEMS[11][1], 11)]  # a conflict; the same item again


def _write(items, output):
    os.makedirs(output)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        written, _ = (p | beam.Create(items)
                      | shards.WriteShards(output, "test", 16, "records", lambda infos: len(infos)))
        rejected = written[shards.REJECTED] | beam.Map(lambda r: (r.key, r.reason))
        assert_that(rejected, equal_to(
            [("k007", "conflicting_key"), ("k007", "conflicting_key"), ("k011", "duplicate_key")]))
    return {name: open(os.path.join(output, name), "rb").read() for name in sorted(os.listdir(output))}


def _records(files):
    from array_record.python.array_record_module import ArrayRecordReader

    got = []
    for name in files:
        reader = ArrayRecordReader(name)
        got.extend(reader.read_all())
        reader.close()
    return got


def test_spilled_records_give_the_same_shards_and_a_repeated_key_keeps_one_copy_or_none(tmp_path):
    spill = SpillWriter(str(tmp_path))
    as_refs = [(key, spill.put(data), info) for key, data, info in ITEMS + DUPLICATES]
    spill.close()
    direct = _write(ITEMS + DUPLICATES, str(tmp_path / "direct"))
    spilled = _write(as_refs, str(tmp_path / "spilled"))
    assert direct == spilled and len(direct) == 3  # ceil(42 / 16)
    stored = set(_records(os.path.join(tmp_path, "direct", name) for name in direct))
    expected = {data for key, data, _ in ITEMS if key != "k007"}
    assert stored == expected  # k007: two different items, neither written; k011: its one copy


def test_a_spill_file_cut_short_is_an_error_not_a_short_record(tmp_path):
    spill = SpillWriter(str(tmp_path))
    ref = spill.put(b"0123456789")
    spill.close()
    with SpillReader() as reader:
        assert reader.read(ref) == b"0123456789" and reader.read(b"raw") == b"raw"
        with pytest.raises(OSError, match="ends before byte 20"):
            reader.read(SpillRef(ref.path, 10, 10))


def _dead_letter(rejections, output, per_file):
    from unisim.pipelines import dead_letter

    os.makedirs(output, exist_ok=True)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        summaries, num_files = (p | beam.Create(rejections) | dead_letter.WriteDeadLetter(output, per_file))
        names = (p | "Finish" >> beam.Create([None])
                 | beam.Map(lambda _, s, n: dead_letter.finish(output, s, n), beam.pvalue.AsList(summaries), num_files))
        assert_that(names | beam.Map(lambda result: result[1]),
                    equal_to([{"duplicate_key": 8, "undecodable_image": 22}]))
    return {name: open(os.path.join(output, name), "rb").read() for name in sorted(os.listdir(output))}


def test_dead_letter_is_sharded_sorted_complete_and_independent_of_arrival_order(tmp_path):
    from unisim.schemas.dead_letter import Rejection

    rejections = [Rejection("test", f"e{i:03d}", "duplicate_key" if i % 4 == 0 else "undecodable_image", f"item {i}")
                  for i in range(30)]
    forward = _dead_letter(rejections, str(tmp_path / "a"), per_file=4)
    backward = _dead_letter(rejections[::-1], str(tmp_path / "b"), per_file=4)
    assert forward == backward and len(forward) == 8  # ceil(30 / 4) files, empty ones included
    assert list(forward) == [f"rejected-{i:05d}-of-00008.jsonl" for i in range(8)]
    lines = [line for data in forward.values() for line in data.decode().splitlines()]
    assert sorted(Rejection.from_json_line(line) for line in lines) == sorted(rejections)
    for data in forward.values():
        keys = [Rejection.from_json_line(line).key for line in data.decode().splitlines()]
        assert keys == sorted(keys)
        assert len(keys) <= 12  # hash-assigned: no file holds a large share of the rejections
