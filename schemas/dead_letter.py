"""The dead letter: one JSON line per rejected item, with a reason that the manifest counts.

A run's dead letter is a set of JSON-lines files, `rejected-NNNNN-of-NNNNN.jsonl`, written in parallel: a
rejection's file is a hash of its key and each file is sorted, so the bytes depend neither on worker count nor on
bundle order, and no worker ever holds more than one file's lines. The manifest lists the files (`dead_letter`)
and counts the rejections by reason. Outputs written before the dead letter was sharded hold one `rejected.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json

DEAD_LETTER_PREFIX = "rejected"
DEAD_LETTER_SUFFIX = ".jsonl"
LEGACY_DEAD_LETTER_NAME = "rejected.jsonl"
REJECTIONS_PER_FILE = 50_000  # ~15 MB of JSON lines: what one worker sorts and writes at a time


def dead_letter_name(index: int, count: int) -> str:
    return f"{DEAD_LETTER_PREFIX}-{index:05d}-of-{count:05d}{DEAD_LETTER_SUFFIX}"


def is_dead_letter_name(name: str) -> bool:
    return name == LEGACY_DEAD_LETTER_NAME or (name.startswith(f"{DEAD_LETTER_PREFIX}-")
                                               and name.endswith(DEAD_LETTER_SUFFIX))


@dataclasses.dataclass(frozen=True, order=True)
class Rejection:
    """An input item (an episode, a clip, a source file) that was not written, and why.

    `reason` is a short stable code (e.g. "undecodable_image", "non_finite_control", "empty_text",
    "invalid_record:<field>") that the manifest counts; `detail` is the human-readable explanation.
    """

    dataset: str
    key: str
    reason: str
    detail: str
    source_file: str = ""
    source_index: int = -1

    def to_json_line(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json_line(cls, line: str) -> "Rejection":
        return cls(**json.loads(line))
