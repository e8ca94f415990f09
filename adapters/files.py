"""Frames stored as numbered files, read lazily, and per-split annotation lists: what several adapters share.

Every read goes through `unisim.fileio` (local, gs:// or any fsspec path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from unisim import fileio


class FrameNumberingError(ValueError):
    """Frame files whose numbers cannot be an episode's frames; `reason` is the dead-letter code."""

    reason = "malformed_frame_numbers"


class DuplicateFrame(FrameNumberingError):
    """Two files carry the same frame number."""

    reason = "duplicate_frame"


# Frame numbers may leave gaps (a frame lost, rejected with its clips), but not run far past the files there are:
# the episode's length is the highest number + 1, and a stray `frame_10000000000.jpg` must not make it 10^10.
MAX_NUMBER_GAP = 1024


def numbered_files(pattern: str, name: re.Pattern) -> list[str | None]:
    """Files matching the glob `pattern` whose name matches `name` (group 1 = the frame number), placed by number:
    index t holds frame t's path, None where the numbering has a gap. [] when there are none."""
    by_number: dict[int, str] = {}
    for path in fileio.glob(pattern):
        match = name.match(path.rsplit("/", 1)[-1])
        if match:
            t = int(match.group(1))
            if t in by_number:
                raise DuplicateFrame(f"frame {t} is stored twice: {by_number[t]} and {path}")
            by_number[t] = path
    if not by_number:
        return []
    highest = max(by_number)
    if highest >= 2 * len(by_number) + MAX_NUMBER_GAP:
        raise FrameNumberingError(f"frame numbers run to {highest} for {len(by_number)} files (e.g. "
                                  f"{by_number[highest]}): not one episode's frames")
    return [by_number.get(t) for t in range(highest + 1)]


class NumberedPaths(Sequence):
    """`template.format(first + i)` for i in range(count), computed when asked: a folder of 200k extracted frames
    costs no listing and no list (EPIC-KITCHENS' `frame_{:010d}.jpg`, numbered from 1)."""

    def __init__(self, template: str, count: int, first: int = 0):
        self.template, self.count, self.first = template, int(count), int(first)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.template.format(self.first + index)


class FileFrames(Sequence):
    """Frames stored one file each, read when indexed: frames no clip keeps (a lower --fps) are never read.

    A `None` path, or a file that has gone, reads as b"", which the pipeline rejects as `missing_image`.
    """

    def __init__(self, paths: Sequence[str | None]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        path = self.paths[index]
        if path is None:
            return b""
        try:
            return fileio.read_bytes(path)
        except FileNotFoundError:
            return b""


class SplitLists:
    """Per-split annotation files that are JSON lists, found under `root` by the first matching name pattern
    (`{split}` filled in) and parsed once each: a worker reads many work units of one file."""

    def __init__(self, root: str, patterns: Sequence[str], what: str):
        self.root, self.patterns, self.what = root, tuple(patterns), what
        self._parsed: dict[str, list] = {}

    def path(self, split: str) -> str | None:
        """The split's file, or None when no pattern matches."""
        return next((f"{self.root}/{p.format(split=split)}" for p in self.patterns
                     if fileio.exists(f"{self.root}/{p.format(split=split)}")), None)

    def entries(self, split: str) -> list:
        if split not in self._parsed:
            import json

            from unisim.schemas.text import decode_text

            path = self.path(split)
            data = json.loads(decode_text(fileio.read_bytes(path)))
            if not isinstance(data, list):
                raise ValueError(f"{path} is not a JSON list of {self.what}")
            self._parsed[split] = data
        return self._parsed[split]
