"""Writing the dead letter: rejections → sorted JSON-lines files written in parallel (`schemas.dead_letter`).

    rejections ─AssignFile (hash of key)─▶ GroupByFile ─Write─▶ rejected-NNNNN-of-NNNNN.jsonl + {reason: count}

The file count is ceil(rejections / REJECTIONS_PER_FILE), so each worker holds one file's lines at most, whatever
the run's size; only the per-file reason counts travel on to the manifest.
"""

from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.metrics import Metrics

from unisim import fileio
from unisim.pipelines import shards
from unisim.schemas.dead_letter import REJECTIONS_PER_FILE, Rejection, dead_letter_name


class _WriteFileFn(beam.DoFn):
    def __init__(self, output: str):
        self._output = output

    def setup(self):
        self.files = Metrics.counter(shards.NAMESPACE, "dead_letter_files_written")

    def process(self, element: tuple[int, list[Rejection]], num_files: int):
        index, rejections = element
        ordered = sorted(rejections)  # by (dataset, key, reason, …): the bytes do not depend on arrival order
        fileio.publish("".join(r.to_json_line() + "\n" for r in ordered).encode("utf-8"),
                          fileio.join(self._output, dead_letter_name(index, num_files)))
        self.files.inc()
        yield index, dict(collections.Counter(r.reason for r in ordered))


class WriteDeadLetter(beam.PTransform):
    """Rejections → dead-letter files. Returns (summaries, num_files): (index, {reason: count}) per file written,
    and the singleton file count for `finish`, which also writes the files no rejection went to."""

    def __init__(self, output: str, per_file: int = REJECTIONS_PER_FILE):
        super().__init__()
        self._output, self._per_file = output, per_file

    def expand(self, rejections: beam.PCollection[Rejection]):
        num_files = shards.count_groups(rejections, self._per_file, "Rejections")
        summaries = (rejections
                     | "AssignFile" >> beam.Map(lambda r, n: (shards.shard_of(r.key, n), r), num_files)
                     | "GroupByFile" >> beam.GroupByKey()
                     | "Write" >> beam.ParDo(_WriteFileFn(self._output), num_files))
        return summaries, num_files


def finish(output: str, summaries: list[tuple[int, dict[str, int]]],
           num_files: int) -> tuple[list[str], dict[str, int]]:
    """(every file name in order, rejections by reason): writes an empty file for each index that got none."""
    by_index = dict(summaries)
    reasons: collections.Counter = collections.Counter()
    for index in range(num_files):
        if index not in by_index:
            fileio.publish(b"", fileio.join(output, dead_letter_name(index, num_files)))
        reasons.update(by_index.get(index, {}))
    return [dead_letter_name(i, num_files) for i in range(num_files)], dict(sorted(reasons.items()))
