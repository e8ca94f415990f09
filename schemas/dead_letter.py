"""The dead-letter record: one JSON line per rejected item, with a reason that the manifest counts."""

from __future__ import annotations

import dataclasses
import json


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
