"""File access for adapters: any path tf.io.gfile reads (local, gs://, ram:// in tests), and lazily read frames."""

from __future__ import annotations

import re
from collections.abc import Sequence


def gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_bytes(path: str) -> bytes:
    with gfile().GFile(path, "rb") as f:
        return f.read()


def exists(path: str) -> bool:
    return gfile().exists(path)


class DuplicateFrame(ValueError):
    """Two files carry the same frame number."""


def numbered_files(pattern: str, name: re.Pattern) -> list[str | None]:
    """Files matching the glob `pattern` whose name matches `name` (group 1 = the frame number), placed by number:
    index t holds frame t's path, None where the numbering has a gap. [] when there are none."""
    by_number: dict[int, str] = {}
    for path in sorted(gfile().glob(pattern)):
        match = name.match(path.rsplit("/", 1)[-1])
        if match:
            t = int(match.group(1))
            if t in by_number:
                raise DuplicateFrame(f"frame {t} is stored twice: {by_number[t]} and {path}")
            by_number[t] = path
    return [by_number.get(t) for t in range(max(by_number) + 1)] if by_number else []


class FileFrames(Sequence):
    """Frames stored one file each, read when indexed: frames no clip keeps (a lower --fps) are never read.

    A `None` path, or a file that has gone, reads as b"", which the pipeline rejects as `missing_image`.
    """

    def __init__(self, paths: Sequence[str | None]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        import tensorflow as tf

        path = self.paths[index]
        if path is None:
            return b""
        try:
            return read_bytes(path)
        except tf.errors.NotFoundError:
            return b""
