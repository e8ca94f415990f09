"""The tests' non-local store: fsspec's in-memory filesystem (`memory://bucket/path`), reached through `unisim.fileio`
exactly as gs:// is. Contents live in this process only, so pipelines that write to it run with the in-process
FnApiRunner. These helpers put objects in (as `gsutil cp` would) and read the store back."""

from __future__ import annotations

import fsspec

PREFIX = "memory://"


def _fs():
    return fsspec.filesystem("memory")


def put(path: str, data: bytes) -> None:
    _fs().pipe_file(path[len(PREFIX):], bytes(data))


def objects(prefix: str) -> dict[str, bytes]:
    """{memory://path: bytes} of every object under `prefix` (a folder's files, recursively)."""
    fs = _fs()
    root = fs._strip_protocol(prefix).rstrip("/")
    found = fs.find(root) if fs.exists(root) else []
    return {PREFIX + path.lstrip("/"): fs.cat_file(path) for path in found}


def clear() -> None:
    fs = _fs()
    for path in fs.ls("/", detail=False):
        fs.rm(path, recursive=True)
