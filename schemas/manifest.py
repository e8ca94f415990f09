"""`manifest.json`: what an output directory of shards holds, and how it was made.

A directory is complete only when its manifest exists: the convert pipeline deletes an old manifest before it
touches any shard and writes the new one last, so a reader never trusts a half-written directory. The manifest
lists the shards explicitly (readers must not glob) and is deterministic: no clock time, sorted keys.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from unisim.schemas.controls import ControlStats
from unisim.schemas.record import SCHEMA_VERSION
from unisim.schemas.text_embeddings import EncoderIdentity

MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".array_record"
# ArrayRecord options of every shard: one record per chunk for random access; no zstd, frames are already JPEG.
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"
# Frame rates closer than this (relative) are one rate written two ways: 59.94 from a CSV and 60000/1001 from a
# container differ by 1e-6; the nearest distinct rates in use, 29.97 and 30, by 1e-3.
FPS_TOLERANCE = 1e-4


RECORD_PREFIX = "records"


def shard_name(index: int, count: int, prefix: str = RECORD_PREFIX) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


@dataclasses.dataclass
class ShardInfo:
    path: str  # a plain file name in the manifest's directory
    records: int
    bytes: int
    sha256: str = ""  # of the file's bytes, computed while writing ("" in outputs from before it was recorded)

    def problem(self, size: int | None, records: int | None = None, sha256: str | None = None) -> str | None:
        """What is wrong with the file found for this shard — its measured size, record count and content hash (None:
        not measured) — in one line naming it; None when it is what the manifest recorded."""
        if size is None:
            return f"shard {self.path} is missing"
        if size != self.bytes:
            return f"shard {self.path} holds {size:,} bytes, the manifest recorded {self.bytes:,}"
        if records is not None and records != self.records:
            return f"shard {self.path} holds {records:,} records, the manifest recorded {self.records:,}"
        if sha256 is not None and self.sha256 and sha256 != self.sha256:
            return (f"shard {self.path} has other content than the manifest recorded (sha256 {sha256[:12]}…, "
                    f"expected {self.sha256[:12]}…)")
        return None


def check_plain_name(name: str, what: str) -> str:
    """`name` if it is a plain file name (no folder, no `..`): a manifest must not point outside its directory."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or ":" in name:
        raise ValueError(f"manifest {what} {name!r} is not a plain file name in the manifest's directory")
    return name


@dataclasses.dataclass
class Manifest:
    dataset: str
    records: int
    source_episodes: int  # episodes the adapter read (including ones whose every clip was rejected)
    rejected: int
    rejected_reasons: dict[str, int]
    frame_height: int
    frame_width: int
    image_format: str
    fps: float  # the stored frame rate; 0.0 when records differ (then see fps_values)
    fps_values: list[float]  # the distinct rates, equal within FPS_TOLERANCE merged (`merge_frame_rates`)
    frames_per_record: tuple[int, int]  # (min, max) over the written records
    frames_per_clip: int
    context_frames: int
    control_stats: ControlStats | None
    shards: list[ShardInfo]
    command: str
    options: dict[str, Any]
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    adapter: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the adapter read: `describe()`
    dead_letter: list[str] = dataclasses.field(default_factory=list)  # the dead-letter files (`schemas.dead_letter`)
    array_record_options: str = ARRAY_RECORD_OPTIONS
    # Text conditioning (schemas.text, schemas.text_embeddings). `text_encoder` is the identity of the encoder
    # that made `text_embeddings` (None: converted without one); `encoder_calls` counts texts that went through
    # the encoder (each unique text once), `texts_truncated` those cut at the encoder's token limit.
    conditioning: dict[str, Any] = dataclasses.field(default_factory=dict)
    text_encoder: EncoderIdentity | None = None
    text_embeddings: list[ShardInfo] = dataclasses.field(default_factory=list)
    # True: text_embeddings[j] holds every text that shards[j] uses (`pipelines.embed`), so a reader of some record
    # shards needs only the same embedding shards. False (older outputs): hashed by text key, read all of them.
    text_embeddings_by_record_shard: bool = False
    unique_texts: int = 0
    encoder_calls: int = 0
    texts_truncated: int = 0
    schema_version: int = SCHEMA_VERSION

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.frame_height, self.frame_width, 3)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["frames_per_record"] = list(self.frames_per_record)
        data["control_stats"] = self.control_stats.to_json() if self.control_stats else None
        data["text_encoder"] = self.text_encoder.to_json() if self.text_encoder else None
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def loads(cls, text: str) -> "Manifest":
        data = json.loads(text)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"manifest has schema version {version}; this code reads version {SCHEMA_VERSION}")
        data["frames_per_record"] = tuple(data["frames_per_record"])
        data["shards"] = [ShardInfo(**s) for s in data["shards"]]
        data["text_embeddings"] = [ShardInfo(**s) for s in data.get("text_embeddings", [])]
        for shard in data["shards"] + data["text_embeddings"]:
            check_plain_name(shard.path, "shard")
        data["control_stats"] = ControlStats.from_json(data["control_stats"]) if data["control_stats"] else None
        if data.get("text_encoder"):
            data["text_encoder"] = EncoderIdentity.from_json(data["text_encoder"], "manifest text_encoder")
        if isinstance(data.get("dead_letter"), str):  # written before the dead letter was sharded: one file
            data["dead_letter"] = [data["dead_letter"]]
        for name in data.get("dead_letter", []):
            check_plain_name(name, "dead-letter file")
        return cls(**data)


def merge_frame_rates(counts: dict[float, int]) -> list[float]:
    """Distinct frame rates from {rate: records}: rates within FPS_TOLERANCE of a group's lowest are one rate,
    written as the one most records carry (the smaller on a tie), so the result does not depend on order."""
    merged: list[list[tuple[float, int]]] = []
    for rate in sorted(counts):
        if merged and rate - merged[-1][0][0] <= FPS_TOLERANCE * rate:
            merged[-1].append((rate, counts[rate]))
        else:
            merged.append([(rate, counts[rate])])
    return [min(group, key=lambda rc: (-rc[1], rc[0]))[0] for group in merged]

