"""Captioned videos of any origin: a table of (video, caption[, start, end]) rows, one clip per row.

`--source` is the table: a `.csv` (with a header), `.jsonl` (one object per line) or `.parquet` file, local or
gs://. Columns are found by name (options override): the video by `video`, `video_path`, `path`, `file`,
`filename`; the caption by `caption`, `text`, `title`, `description`; optional `start` / `end` (also
`start_sec`/`end_sec`, `start_time`/`end_time`) in seconds or "HH:MM:SS.fff"; an optional `id` (also `key`,
`video_id`, `clip_id`) names the episode, else the row number does. An id is not assumed unique: tables keyed by
video (MSR-VTT's `video_id`, ActivityNet Captions) give one video many captions, so a later row reusing an id
with other content is kept as `<id>@<row>`. Relative video paths are resolved
against `video_root` (default: the table's folder). A row without start and end (or with both empty) covers the
whole video.
Records get the split given by `--split` (default "train").

Work units are runs of rows (`0:16`, …; at most `UNIT_SIZE`, and small tables are cut into up to `MIN_UNITS`
so that workers share them); rows of one video are best kept together and in time order, which lets one
decoder serve them. Rejected here: `malformed_annotation` (a row that does not parse, lacks a video or
caption, or has end before start), `duplicate_annotation` (a row with the same video, start, end and caption
as an earlier one, whatever its id), and the video reasons of
`adapters/annotated_video.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import posixpath
from collections.abc import Iterator
from typing import Any

from unisim import fileio
from unisim.adapters.annotated_video import VideoChecks, csv_rows, parse_seconds, video_action
from unisim.adapters.base import DatasetAdapter, Episode, option
from unisim.adapters.registry import register
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.text import decode_text

UNIT_SIZE = 1000  # rows per work unit at most; small tables are cut into up to MIN_UNITS units so workers share them
MIN_UNITS = 64
MIN_UNIT_SIZE = 8
GUESSES = {
    "video": ("video", "video_path", "path", "file", "filename"),
    "caption": ("caption", "text", "title", "description"),
    "start": ("start", "start_sec", "start_time"),
    "end": ("end", "end_sec", "end_time"),
    "id": ("id", "key", "video_id", "clip_id"),
}
FORMATS = (".csv", ".jsonl", ".parquet")


@dataclasses.dataclass(frozen=True)
class VideoCaptionsOptions:
    video: str = option("", "the video path column (default: guessed, see the module docs)")
    caption: str = option("", "the caption column (default: guessed)")
    start: str = option("", "the start-time column (default: guessed; none means whole videos)")
    end: str = option("", "the end-time column (default: guessed)")
    id: str = option("", "the column naming each row's episode (default: guessed, else the row number)")
    video_root: str = option("", "folder that relative video paths are under (default: the table's folder)")


def _rows(path: str) -> tuple[list[str], list[dict | str]]:
    """(column names, rows); a row that does not parse is kept as a string saying why."""
    data = fileio.read_bytes(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        return table.column_names, table.to_pylist()
    text = decode_text(data)
    if path.endswith(".jsonl"):
        rows: list[dict | str] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(row if isinstance(row, dict) else f"line {number} is not a JSON object")
            except json.JSONDecodeError as e:
                rows.append(f"line {number}: {e}")
        names = sorted({k for row in rows if isinstance(row, dict) for k in row})
        return names, rows
    header, numbered = csv_rows(text)
    return header, [dict(zip(header, fields)) if len(fields) == len(header)
                    else f"line {number} has {len(fields)} fields, the header {len(header)}"
                    for number, fields in numbered]


def _comparable(value: Any, role: str) -> Any:
    """A cell as duplicate detection compares it: times as seconds ("00:00:01.0" is 1.0), empty as None."""
    if value in (None, ""):
        return None
    if role in ("start", "end"):
        seconds = parse_seconds(value)
        return round(seconds, 3) if seconds is not None else str(value)
    return value.strip() if isinstance(value, str) else str(value)


@register
class VideoCaptions(DatasetAdapter):
    name = "video_captions"
    description = "any captioned videos: a CSV/JSONL/parquet table of (video, caption[, start, end]), one clip per row"
    Options = VideoCaptionsOptions

    def __init__(self, source: str, split: str | None = None, options=None):
        super().__init__(source, split, options)
        if not source.endswith(FORMATS):
            raise ValueError(f"video_captions: --source must be a {', '.join(FORMATS)} file, got {source!r}")
        self.root = (self.options.video_root or posixpath.dirname(source)).rstrip("/")
        self._checks = VideoChecks()

    @functools.cached_property
    def table(self) -> tuple[dict[str, str], list[dict | str]]:
        """(role → column, rows), parsed once per adapter instance."""
        if not fileio.exists(self.source):
            raise FileNotFoundError(f"video_captions: {self.source!r} does not exist")
        names, rows = _rows(self.source)
        columns = {}
        for role, guesses in GUESSES.items():
            chosen = getattr(self.options, role)
            if chosen and chosen not in names:
                raise ValueError(f"video_captions: column {chosen!r} ({role}) is not in {self.source}; its "
                                 f"columns: {', '.join(names)}")
            found = chosen or next((g for g in guesses if g in names), "")
            if found:
                columns[role] = found
        missing = [role for role in ("video", "caption") if role not in columns]
        if missing:
            raise ValueError(f"video_captions: no {' or '.join(missing)} column in {self.source} (its columns: "
                             f"{', '.join(names)}); name it with --adapter_option {missing[0]}=COLUMN")
        if ("start" in columns) != ("end" in columns):
            raise ValueError(f"video_captions: {self.source} has a {'start' if 'start' in columns else 'end'} "
                             "column but not the other; give both or neither")
        return columns, rows

    @functools.cached_property
    def row_keys(self) -> dict[int, tuple[str, int | None]]:
        """row → (its key, the earlier row it repeats or None), for every row that parsed. A repeat is the same
        content (video, caption, start and end as times); the key is the row's id, or `<id>@<row>` when an
        earlier row with other content has that id, or `row<number>` without an id."""
        columns, rows = self.table
        keys: dict[int, tuple[str, int | None]] = {}
        first_by_content: dict[tuple, int] = {}
        ids: set[str] = set()
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            content = tuple(_comparable(row.get(columns[c]), c) if c in columns else None
                            for c in ("video", "caption", "start", "end"))
            ident = row.get(columns["id"]) if "id" in columns else None
            key = f"row{index:09d}" if ident in (None, "") else str(ident)
            repeats = first_by_content.get(content)
            keys[index] = (f"{key}@{index}" if key in ids else key, repeats)
            if repeats is None:
                first_by_content[content] = index
                ids.add(key)
        return keys

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "columns": self.table[0]}

    def work_units(self) -> list[str]:
        rows = len(self.table[1])
        size = min(UNIT_SIZE, max(MIN_UNIT_SIZE, -(-rows // MIN_UNITS)))
        return [f"{start}:{min(start + size, rows)}" for start in range(0, rows, size)]

    def read(self, unit: str) -> Iterator[Episode | Rejection]:
        columns, rows = self.table
        start, stop = (int(n) for n in unit.split(":"))
        for index, row in enumerate(rows[start:stop], start):
            yield self._row(columns, index, row)

    def _row(self, columns: dict[str, str], index: int, row: dict | str) -> Episode | Rejection:
        default_key = f"row{index:09d}"
        if isinstance(row, str):
            return self.reject("malformed_annotation", row, default_key, self.source, index)
        key, repeats = self.row_keys[index]
        if repeats is not None:
            return self.reject("duplicate_annotation", f"row {index} has the same video, times and caption as row "
                               f"{repeats} ({self.row_keys[repeats][0]})", key, self.source, index)
        video, caption = row.get(columns["video"]), row.get(columns["caption"])
        if not isinstance(video, str) or not video or not isinstance(caption, str):
            return self.reject("malformed_annotation", f"row {index} lacks a video path or a caption: "
                               f"{str(row)[:200]}", key, self.source, index)
        seconds = None
        bounds = [row.get(columns[c]) for c in ("start", "end") if c in columns]
        if any(b not in (None, "") for b in bounds):  # both empty: the whole video
            start, end = (parse_seconds(b) for b in bounds)
            if start is None or end is None or end < start:
                return self.reject("malformed_annotation", f"row {index}: start {row.get(columns['start'])!r} and end "
                                   f"{row.get(columns['end'])!r} are not a time span", key, self.source, index)
            seconds = (start, end)
        path = video if fileio.is_remote(video) or video.startswith("/") else f"{self.root}/{video}"
        return video_action(self, self._checks, key=key, path=path, seconds=seconds, text=caption,
                            split=self.split or "train", source_index=index, annotation_file=self.source)
