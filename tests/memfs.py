"""An in-memory Beam filesystem (`memfs://bucket/path`): the non-local, GCS-like path for tests.

Like GCS it has no directories, only object names, and rename is copy + delete. Registering the class (importing
this module) makes `FileSystems` route `memfs://` paths here. Contents live in this process only, so pipelines
that write to it run with the in-process FnApiRunner.
"""

from __future__ import annotations

import io
import threading

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

_OBJECTS: dict[str, bytes] = {}
_LOCK = threading.Lock()


class _Writer(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self):
        if not self.closed:
            with _LOCK:
                _OBJECTS[self._path] = self.getvalue()
        super().close()


class InMemoryFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return "memfs"

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
        with _LOCK:
            items = sorted((p, len(d)) for p, d in _OBJECTS.items() if p.startswith(dir_or_prefix))
        for path, size in items:
            yield FileMetadata(path, size)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Writer(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        with _LOCK:
            if path not in _OBJECTS:
                raise BeamIOError(f"no such object {path}")
            return io.BytesIO(_OBJECTS[path])

    def copy(self, source_file_names, destination_file_names):
        with _LOCK:
            for src, dst in zip(source_file_names, destination_file_names):
                _OBJECTS[dst] = _OBJECTS[src]

    def rename(self, source_file_names, destination_file_names):
        with _LOCK:
            for src, dst in zip(source_file_names, destination_file_names):
                _OBJECTS[dst] = _OBJECTS.pop(src)

    def exists(self, path):
        with _LOCK:
            return path in _OBJECTS

    def size(self, path):
        with _LOCK:
            return len(_OBJECTS[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path))

    def delete(self, paths):
        with _LOCK:
            for path in paths:
                _OBJECTS.pop(path, None)


def objects(prefix: str) -> dict[str, bytes]:
    with _LOCK:
        return {p: d for p, d in _OBJECTS.items() if p.startswith(prefix)}


def clear() -> None:
    with _LOCK:
        _OBJECTS.clear()


def put(path: str, data: bytes) -> None:
    """Uploads an object, as `gsutil cp` would."""
    with _LOCK:
        _OBJECTS[path] = bytes(data)
