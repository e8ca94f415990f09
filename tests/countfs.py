"""A non-local Beam filesystem shared between processes (`countfs://bucket/path`) that counts the bytes read.

`memfs` keeps its objects in one process; a multi-process test (two `jax.distributed` trainers) needs a remote-like
store that every process sees and a count of what each one fetched. Objects live as files under `$COUNTFS_ROOT`
(`countfs://a/b` is `$COUNTFS_ROOT/a/b`), but the code under test only reaches them through Beam's `FileSystems`,
as it would `gs://`. Every file opened for reading appends "pid bytes path" to `$COUNTFS_LOG` when closed.
Importing this module registers the scheme (in a subprocess too: import it before the code under test).
"""

from __future__ import annotations

import io
import os
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

SCHEME = "countfs"
PREFIX = f"{SCHEME}://"


def local_path(path: str) -> str:
    if not path.startswith(PREFIX):
        raise BeamIOError(f"not a {SCHEME} path: {path}")
    return os.path.join(os.environ["COUNTFS_ROOT"], path[len(PREFIX):])


class _CountedReader(io.RawIOBase):
    def __init__(self, path: str):
        super().__init__()
        self._path, self._file, self.bytes_read = path, open(local_path(path), "rb"), 0

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self._file.readinto(buffer)
        self.bytes_read += n or 0
        return n

    def close(self):
        if not self.closed:
            self._file.close()
            with open(os.environ["COUNTFS_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{os.getpid()} {self.bytes_read} {self._path}\n")
        super().close()


class CountingFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        root = os.environ["COUNTFS_ROOT"]
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                full = os.path.join(folder, name)
                path = PREFIX + os.path.relpath(full, root)
                if path.startswith(dir_or_prefix):
                    yield FileMetadata(path, os.path.getsize(full))

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        os.makedirs(os.path.dirname(local_path(path)), exist_ok=True)
        return open(local_path(path), "wb")

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if not os.path.isfile(local_path(path)):
            raise BeamIOError(f"no such object {path}")
        return io.BufferedReader(_CountedReader(path))

    def copy(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            shutil.copyfile(local_path(src), local_path(dst))

    def rename(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            os.replace(local_path(src), local_path(dst))

    def exists(self, path):
        return os.path.isfile(local_path(path))

    def size(self, path):
        return os.path.getsize(local_path(path))

    def last_updated(self, path):
        return os.path.getmtime(local_path(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path))

    def delete(self, paths):
        for path in paths:
            os.remove(local_path(path))


def bytes_read_by_process(log_path: str) -> dict[int, dict[str, int]]:
    """pid → {path: bytes read}, from the log."""
    out: dict[int, dict[str, int]] = {}
    for line in open(log_path, encoding="utf-8"):
        pid, count, path = line.rstrip("\n").split(" ", 2)
        files = out.setdefault(int(pid), {})
        files[path] = files.get(path, 0) + int(count)
    return out
