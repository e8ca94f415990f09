"""One file layer for every path the project reads or writes: local, gs:// (gcsfs) or any fsspec protocol.

Every layer — adapters reading a release, the converter writing shards, the trainer fetching its share, the
simulator reading a run, the text encoder loading a checkpoint — goes through these functions, so that "is it
remote?", atomic publishing and copying to a local cache are written once. Local paths take Python's own calls
(no fsspec import on the hot path of a local worker); anything with a `protocol://` goes through fsspec, which
knows gs:// (gcsfs), memory:// (what the tests use as a non-local store) and whatever else is registered.

ArrayRecord and FFmpeg read and write local files only: `upload` and `fetch` move whole files between a local
path and any other.
"""

from __future__ import annotations

import glob as _glob
import os
import shutil
import uuid
from typing import IO

TMP_PREFIX = ".tmp-"  # names of files (and folders) still being written
_CHUNK = 16 << 20


def is_remote(path: str) -> bool:
    """True for `protocol://…` paths other than file://."""
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _fs(path: str):
    """(fsspec filesystem, the path in its own terms) of a remote path."""
    import fsspec

    return fsspec.core.url_to_fs(path)


def join(base: str, *names: str) -> str:
    if not is_remote(base):
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def open(path: str, mode: str = "rb") -> IO:
    if not is_remote(path):
        return _builtin_open(_local(path), mode)
    fs, inner = _fs(path)
    if "r" in mode and not fs.isfile(inner):
        raise FileNotFoundError(path)
    return fs.open(inner, mode)


def read_bytes(path: str) -> bytes:
    """The file's bytes; FileNotFoundError when it does not exist, on any filesystem."""
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(_local(path))
    fs, inner = _fs(path)
    return fs.exists(inner)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(_local(path))
    fs, inner = _fs(path)
    return fs.isdir(inner)


def size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(_local(path))
    fs, inner = _fs(path)
    return int(fs.size(inner))


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (`*`, `?`, `[...]`), as full paths (files and folders)."""
    if not is_remote(pattern):
        return sorted(_glob.glob(_local(pattern)))
    fs, inner = _fs(pattern)
    # Results come back in the filesystem's own terms ("bucket/a" for gs://bucket/a, "/b/a" for memory://b/a): put
    # the pattern's own spelling of the folder back in front, so callers get paths of the form they gave.
    wild = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    prefix = pattern[: pattern.rfind("/", 0, wild) + 1]
    inner_prefix = fs._strip_protocol(prefix).rstrip("/") + "/"
    return sorted(prefix + p[len(inner_prefix):] if p.startswith(inner_prefix) else fs.unstrip_protocol(p)
                  for p in fs.glob(inner))


def listdir(path: str) -> list[str]:
    """Sorted names directly inside a folder (an object store's "folder": the prefix); [] when there is none."""
    if not is_remote(path):
        return sorted(os.listdir(_local(path))) if os.path.isdir(_local(path)) else []
    fs, inner = _fs(path)
    if not fs.isdir(inner):
        return []
    return sorted(basename(p) for p in fs.ls(inner, detail=False) if p.rstrip("/") != inner.rstrip("/"))


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    fs, inner = _fs(path)
    fs.makedirs(inner, exist_ok=True)


def remove(paths: list[str] | str) -> None:
    """Deletes files (and local folders); a path that is already gone is no error."""
    for path in [paths] if isinstance(paths, str) else paths:
        if not is_remote(path):
            if os.path.isdir(_local(path)):
                shutil.rmtree(_local(path), ignore_errors=True)
            elif os.path.exists(_local(path)):
                os.remove(_local(path))
            continue
        fs, inner = _fs(path)
        if fs.exists(inner):
            fs.rm(inner, recursive=True)


def temporary_name(destination: str) -> str:
    """A unique name beside `destination` that this tool recognises as its own (TMP_PREFIX)."""
    head, _, name = destination.rpartition("/")
    return f"{head}/{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"


def _rename(source: str, destination: str) -> None:
    if not is_remote(destination):
        os.replace(_local(source), _local(destination))  # atomic on POSIX, replaces an old file of that name
        return
    fs, inner = _fs(destination)
    fs.mv(_fs(source)[1], inner)  # object stores: copy + delete; readers never see a partial object


def publish(data: bytes, destination: str) -> None:
    """Writes `data` to `destination` atomically: under a temporary name, then renamed into place."""
    temporary = temporary_name(destination)
    with open(temporary, "wb") as f:
        f.write(data)
    _rename(temporary, destination)


def upload(local_path: str, destination: str) -> None:
    """Moves a local file to `destination` (any filesystem), atomically; the local file is consumed."""
    if not is_remote(destination):
        os.replace(local_path, _local(destination))
        return
    temporary = temporary_name(destination)
    with _builtin_open(local_path) as src, open(temporary, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    _rename(temporary, destination)
    os.remove(local_path)


def _builtin_open(path: str, mode: str = "rb"):
    import builtins

    return builtins.open(path, mode)


def fetch(path: str, local_path: str) -> int:
    """Copies `path` (any filesystem) to `local_path`, atomically (a partial copy never has the final name);
    returns the bytes copied."""
    partial = f"{local_path}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with open(path, "rb") as src, _builtin_open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
        copied = dst.tell()
    os.replace(partial, local_path)
    return copied


def sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (any filesystem), read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
