"""A non-local filesystem shared between processes (`countfs://bucket/path`) that counts the bytes each one reads.

fsspec's memory:// lives in one process; a multi-process test (two `jax.distributed` trainers) needs a remote-like
store that every process sees and a count of what each fetched. Objects live as files under `$COUNTFS_ROOT`
(`countfs://a/b` is `$COUNTFS_ROOT/a/b`), but the code under test reaches them only through `unisim.fileio`, as it
would gs://. Every file opened for reading appends "pid bytes path" to `$COUNTFS_LOG` when closed. Importing this
module registers the protocol with fsspec (in a subprocess too: import it before the code under test).
"""

from __future__ import annotations

import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

SCHEME = "countfs"
PREFIX = f"{SCHEME}://"


class _CountedFile:
    """A read-only file that counts what is read from it and logs the count when closed."""

    def __init__(self, path: str, raw):
        self._path, self._raw, self.bytes_read = path, raw, 0

    def read(self, size=-1):
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer):
        n = self._raw.readinto(buffer)
        self.bytes_read += n or 0
        return n

    def close(self):
        if not self._raw.closed:
            self._raw.close()
            with open(os.environ["COUNTFS_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{os.getpid()} {self.bytes_read} {self._path}\n")

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CountingFileSystem(LocalFileSystem):
    protocol = SCHEME
    root_marker = ""

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith(PREFIX):
            path = path[len(PREFIX):]
        if path.startswith(os.environ["COUNTFS_ROOT"]):
            return path
        return os.path.join(os.environ["COUNTFS_ROOT"], path.lstrip("/"))

    def unstrip_protocol(self, name):
        return PREFIX + os.path.relpath(name, os.environ["COUNTFS_ROOT"])

    def _open(self, path, mode="rb", **kwargs):
        raw = super()._open(path, mode, **kwargs)
        return _CountedFile(path, raw) if "r" in mode else raw


fsspec.register_implementation(SCHEME, CountingFileSystem, clobber=True)


def bytes_read_by_process(log_path: str) -> dict[int, dict[str, int]]:
    """pid → {path: bytes read}, from the log."""
    out: dict[int, dict[str, int]] = {}
    for line in open(log_path, encoding="utf-8"):
        pid, count, path = line.rstrip("\n").split(" ", 2)
        files = out.setdefault(int(pid), {})
        files[path] = files.get(path, 0) + int(count)
    return out
