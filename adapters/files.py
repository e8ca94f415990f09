"""File access for adapters: any path tf.io.gfile reads (local, gs://, ram:// in tests), and lazily read frames."""

from __future__ import annotations

from collections.abc import Sequence


def gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_bytes(path: str) -> bytes:
    with gfile().GFile(path, "rb") as f:
        return f.read()


def exists(path: str) -> bool:
    return gfile().exists(path)


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
