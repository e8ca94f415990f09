"""The data side of `unisim view`: what the dataset viewer's page (shards/viewer.html) asks for, as JSON-able values
and decoded frames, read from converted directories through `shards/reader.py` — the trainer's own reading code, so
the page shows what training would read.

Nothing is read up front but the manifests: a directory of millions of records opens at once. Each answer reads
only what it shows —

- `summary()`: the manifests alone (counts, frame rates and sizes, control names, the text encoder's identity);
- `rejections()`: the counts by reason from the manifests, examples from the first `DEAD_LETTER_FILES` dead-letter
  files of each directory, stopping as soon as every reason asked for has its examples;
- `records()`: one page, from the shards that hold it (random access: a local shard reads only those records). A
  text filter must look at records to match them, so it scans on from `start` for at most `SCAN_RECORDS` records
  and says where it stopped (`next`): the page's "more" continues from there;
- `frames()`: one record's frames decoded by the reader (`decode_resized` at the stored size: the image gate, the
  same pixels as every other reader), as uint8 RGB for the page to draw losslessly.

Before a shard is read it passes the reader's integrity checks (`shard_problems`: present, its recorded size, its
recorded record count); one that fails raises the reader's `ShardIntegrityError`, which the page shows instead of
records. Remote directories (gs://, any fsspec path) are read through a local copy of each shard touched, kept in a
cache for the viewer's life.

Several directories may be viewed together (a mixture's sources): a "source" is one directory, numbered in the
order given, and records are numbered across the selected sources in that order.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence

import numpy as np

from unisim import fileio
from unisim.schemas import record as rec
from unisim.schemas.controls import ControlTokenizer
from unisim.schemas.errors import UserError
from unisim.schemas.manifest import Manifest, ShardInfo
from unisim.shards import reader

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "viewer.html")
PAGE_SIZE = 8  # records on a page unless asked otherwise
MAX_PAGE_SIZE = 50  # a page's records travel as one JSON answer; their frames come one record at a time
SCAN_RECORDS = 500  # records a text-filtered page reads at most before it answers (then "more" scans on)
EXAMPLES = 3  # rejection examples per reason unless asked otherwise
MAX_EXAMPLES = 100
DEAD_LETTER_FILES = 4  # of each directory, read at most for examples (each holds up to 50,000 rejections)
READ_CHUNK = 64  # records read at once while scanning a shard


class RequestError(UserError):
    """A request the viewer cannot answer as asked: an unknown source, a record number out of range."""


@dataclasses.dataclass
class Source:
    """One converted directory: its manifest, where each shard's records start, its control tokenizer."""

    index: int
    directory: str
    manifest: Manifest
    shard_starts: list[int]  # the number of the first record of each shard, in manifest order
    records: int  # in its shards (what the manifest's `records` counts too)
    tokenizer: ControlTokenizer | None  # None: converted without controls

    @classmethod
    def open(cls, index: int, directory: str) -> "Source":
        manifest = reader.read_manifest(directory)  # ManifestError: not a conversion's output
        ends = np.cumsum([0] + [s.records for s in manifest.shards]).tolist()
        stats = manifest.control_stats
        return cls(index, directory, manifest, ends[:-1], ends[-1], ControlTokenizer(stats) if stats else None)

    def locate(self, index: int) -> tuple[ShardInfo, int]:
        """(the shard holding record `index` of this directory, the record's row in it)."""
        shard = bisect.bisect_right(self.shard_starts, index) - 1  # empty shards share a start: the last one wins
        return self.manifest.shards[shard], index - self.shard_starts[shard]


class Viewer:
    """The converted `directories`, opened (manifests read) for the viewer's requests. Thread-safe for reading: the
    server answers requests on several threads. `close()` removes the local copies of remote shards."""

    def __init__(self, directories: Sequence[str], cache_dir: str | None = None):
        if not directories:
            raise UserError("give at least one converted directory")
        self.sources = [Source.open(i, d.rstrip("/") or d) for i, d in enumerate(directories)]
        self._cache_dir, self._own_cache = cache_dir, cache_dir is None
        self._checked: set[tuple[int, str]] = set()  # shards that passed the integrity checks
        self._lock = threading.Lock()  # requests arrive on several threads: one cache directory for them all

    def close(self) -> None:
        if self._own_cache and self._cache_dir:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ summary

    def summary(self) -> dict:
        """What the manifests say, per source and in total, and the reasons any rejection was counted under."""
        sources = [_describe_source(s) for s in self.sources]
        totals = {name: sum(s[name] for s in sources) for name in ("records", "source_episodes", "shards", "rejected")}
        reasons = sorted({r for s in self.sources for r in s.manifest.rejected_reasons})
        return {"sources": sources, "totals": totals, "reasons": reasons, "page_size": PAGE_SIZE,
                "max_page_size": MAX_PAGE_SIZE, "scan_records": SCAN_RECORDS}

    # --------------------------------------------------------------------------------------------- rejections

    def rejections(self, source: int | None = None, reason: str | None = None, examples: int = EXAMPLES) -> dict:
        """The rejections of the selected sources by reason — counts from the manifests, up to `examples` examples
        of each from the dead-letter files — optionally of one `reason` only."""
        examples = max(0, min(examples, MAX_EXAMPLES))
        counts: dict[str, int] = {}
        for s in self._selected(source):
            for name, count in s.manifest.rejected_reasons.items():
                if reason in (None, name):
                    counts[name] = counts.get(name, 0) + count
        found: dict[str, list[dict]] = {name: [] for name in counts}
        files_read = files = 0
        for s in self._selected(source):
            files += len(s.manifest.dead_letter)
            wanted = [n for n in counts if s.manifest.rejected_reasons.get(n)]
            if not wanted or all(len(found[n]) >= examples for n in wanted):
                continue
            # the reader's own iteration over the first files only: a large dead letter is not read whole
            first = dataclasses.replace(s.manifest, dead_letter=s.manifest.dead_letter[:DEAD_LETTER_FILES])
            files_read += len(first.dead_letter)
            try:
                for rejection in reader.iter_dead_letter(s.directory, first):
                    kept = found.get(rejection.reason)
                    if kept is not None and len(kept) < examples:
                        kept.append({"source": s.index, **dataclasses.asdict(rejection)})
                        if all(len(found[n]) >= examples for n in wanted):
                            break
            except FileNotFoundError as e:
                missing = os.path.basename(str(e.filename)) if e.filename else str(e)
                raise reader.ShardIntegrityError(f"{s.directory}: the dead-letter file {missing} that the manifest "
                                                 "lists is missing") from None
        groups = [{"reason": name, "count": counts[name], "examples": found[name]} for name in sorted(counts)]
        return {"reasons": groups, "total": sum(counts.values()), "files": files, "files_read": files_read}

    # ------------------------------------------------------------------------------------------------ records

    def records(self, source: int | None = None, text: str = "", start: int = 0, limit: int = PAGE_SIZE) -> dict:
        """A page: up to `limit` records from record number `start` of the selected sources, those whose text
        contains `text` (case-insensitive) when given. `next` is where the following page starts (None: at the
        end); a text filter reads at most SCAN_RECORDS records, so a page may hold fewer matches than `limit`
        with more to come."""
        selected = self._selected(source)
        total = sum(s.records for s in selected)
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        if not 0 <= start <= total:
            raise RequestError(f"record {start} is outside the {total:,} records")
        needle = text.casefold()
        budget = SCAN_RECORDS if needle else limit
        found, position = [], start
        while position < total and len(found) < limit and position - start < budget:
            s, index = self._locate(selected, position)
            shard, row = s.locate(index)
            end = min(shard.records, row + (READ_CHUNK if needle else limit - len(found)),
                      row + budget - (position - start))
            for data in self._read(s, shard, row, end):
                record = rec.decode(data)
                position += 1
                if needle in record.text.casefold():
                    found.append(_describe_record(s, index, record))
                    if len(found) == limit:
                        break
                index += 1
        return {"start": start, "next": position if position < total else None, "scanned": position - start,
                "total": total, "text": text, "records": found}

    def record(self, source: int, index: int) -> rec.ClipRecord:
        """Record `index` of one source, decoded and validated."""
        s = self._source(source)
        if not 0 <= index < s.records:
            raise RequestError(f"{s.directory} has no record {index} (it holds {s.records:,})")
        shard, row = s.locate(index)
        return rec.decode(self._read(s, shard, row, row + 1)[0])

    def frames(self, source: int, index: int) -> np.ndarray:
        """The record's frames as the reader decodes them: uint8 RGB [frames, height, width, 3]."""
        record = self.record(source, index)
        size = (record.height, record.width)
        return reader.decode_resized(record.frames, size, size)

    # ------------------------------------------------------------------------------------------------ reading

    def _source(self, source: int) -> Source:
        if not 0 <= source < len(self.sources):
            raise RequestError(f"no source {source}: there are {len(self.sources)}")
        return self.sources[source]

    def _selected(self, source: int | None) -> list[Source]:
        return self.sources if source is None else [self._source(source)]

    @staticmethod
    def _locate(selected: list[Source], position: int) -> tuple[Source, int]:
        """(the source holding record `position` of the selection, the record's number in that source)."""
        for s in selected:
            if position < s.records:
                return s, position
            position -= s.records
        raise RequestError(f"record {position} is past the end")

    def _read(self, s: Source, shard: ShardInfo, begin: int, end: int) -> list[bytes]:
        self._check(s, shard)
        return reader.read_record_range(s.directory, s.manifest, shard, begin, end, cache_dir=self._cache())

    def _check(self, s: Source, shard: ShardInfo) -> None:
        """The reader's integrity checks of one shard (once per viewer): its size without reading it, then its
        record count. A remote shard's size is checked before it is copied, its record count on the copy."""
        if (s.index, shard.path) in self._checked:
            return
        if fileio.is_remote(s.directory):
            path = fileio.join(s.directory, shard.path)
            problem = shard.problem(fileio.size(path) if fileio.exists(path) else None)
            if problem:
                problems = [problem]
            else:
                local, _ = reader.localize(s.directory, s.manifest, [(shard.path, shard.bytes)], self._cache())
                problems = reader.shard_problems(local, [shard])
        else:
            problems = reader.shard_problems(s.directory, [shard])
        if problems:
            raise reader.ShardIntegrityError(f"{s.directory}: {problems[0]}")
        self._checked.add((s.index, shard.path))

    def _cache(self) -> str | None:
        """Where remote shards are copied (made on first use; local directories are read where they are)."""
        with self._lock:
            if self._cache_dir is None and any(fileio.is_remote(s.directory) for s in self.sources):
                self._cache_dir = tempfile.mkdtemp(prefix="unisim-view-")
            return self._cache_dir


def _describe_source(s: Source) -> dict:
    m = s.manifest
    encoder = m.text_encoder
    return {
        "index": s.index, "directory": s.directory, "dataset": m.dataset, "adapter": m.adapter.get("name", ""),
        "records": m.records, "source_episodes": m.source_episodes, "shards": len(m.shards),
        "bytes": sum(shard.bytes for shard in m.shards), "rejected": m.rejected,
        "rejected_reasons": dict(sorted(m.rejected_reasons.items())), "dead_letter_files": len(m.dead_letter),
        "fps": m.fps, "fps_values": m.fps_values, "frame_height": m.frame_height, "frame_width": m.frame_width,
        "image_format": m.image_format, "frames_per_record": list(m.frames_per_record),
        "frames_per_clip": m.frames_per_clip, "context_frames": m.context_frames,
        "controls": _control_names(m), "unique_texts": m.unique_texts,
        "text_encoder": None if encoder is None else {"fingerprint": encoder.fingerprint, "d_model": encoder.d_model,
                                                      "path": encoder.path, "max_tokens": encoder.max_tokens,
                                                      "model_type": encoder.model_type},
    }


def _control_names(m: Manifest) -> dict | None:
    """The control dimensions' names and bounds. The format records names (the statistics', which the adapter
    declared) but no units: `units` is None so that the page says so rather than guessing."""
    stats = m.control_stats
    if stats is None:
        return None
    return {"names": list(stats.names), "units": None, "low": list(stats.low), "high": list(stats.high),
            "num_bins": stats.num_bins}


def _describe_record(s: Source, index: int, record: rec.ClipRecord) -> dict:
    """A record as the page shows it: where it came from, its text, its frames' layout, its controls by dimension
    (tokens, the tokens decoded by the directory's ControlTokenizer, and the values as read from the source)."""
    tokens = np.asarray(record.control_tokens)
    dims = tokens.shape[1] if tokens.ndim == 2 else 0
    names = s.tokenizer.stats.names if s.tokenizer else ()
    decoded = s.tokenizer.decode(tokens) if s.tokenizer and len(names) == dims else None
    return {
        "source": s.index, "index": index, "key": record.key, "dataset": record.dataset,
        "episode_id": record.episode_id, "clip_index": record.clip_index, "split": record.split,
        "source_file": record.source_file, "source_index": record.source_index,
        "text": record.text, "conditioning_text": record.conditioning_text,
        "fps": record.fps, "is_image": record.is_image, "height": record.height, "width": record.width,
        "frames": record.num_frames, "context_frames": record.context_frames,
        "frame_indices": np.asarray(record.frame_indices).tolist(),
        "controls": {
            "names": list(names) if decoded is not None else [f"dimension {d}" for d in range(dims)],
            "units": None,  # not in the format (see `_control_names`)
            "tokens": tokens.T.tolist(),
            "decoded": None if decoded is None else decoded.T.tolist(),  # float32 values, exact in JSON
            "raw": np.asarray(record.controls).T.tolist(),
            "low": list(s.tokenizer.stats.low) if decoded is not None else None,
            "high": list(s.tokenizer.stats.high) if decoded is not None else None,
        },
    }
