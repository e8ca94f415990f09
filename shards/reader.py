"""Reading a converted directory: its manifest, its shards (checked against the manifest), its records and its
frames at a size. Local or remote (gs://, any fsspec path) through `unisim.fileio`.

Every reader of a conversion's output uses this module: the trainer's loader, `unisim inspect`, `unisim eval`, the
playground, the conformance kit and the benchmarks. ArrayRecord opens local files only, so a remote shard is read
from a local copy: a temporary one for a single pass (`iter_records`), or a cache that outlives the run for
training (`localize`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from unisim import fileio
from unisim.fileio import images
from unisim.schemas import record as rec
from unisim.schemas.dead_letter import Rejection
from unisim.schemas.errors import UserError
from unisim.schemas.manifest import MANIFEST_NAME, Manifest, ShardInfo


class ManifestError(UserError):
    """A directory without a readable manifest: not a converted directory, an unfinished run, or another schema."""


class ShardIntegrityError(UserError):
    """A directory whose shards are not what its manifest records (missing, resized, replaced, corrupt)."""


def read_manifest(directory: str) -> Manifest:
    """The manifest of a converted directory, local or remote."""
    try:
        text = fileio.read_text(fileio.join(directory, MANIFEST_NAME))
    except FileNotFoundError:
        raise ManifestError(f"{directory}: no {MANIFEST_NAME} (not a converted directory, or an unfinished "
                            "run)") from None
    try:
        return Manifest.loads(text)
    except ValueError as e:  # the schema version check
        raise ManifestError(f"{directory}: {e}") from None


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """`path` as a local file for the duration of the block: itself when local, else a temporary copy."""
    if not fileio.is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="unisim-shard-") as scratch:
        local = os.path.join(scratch, fileio.basename(path))
        fileio.fetch(path, local)
        yield local


def _count_records(local: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(local, "readahead_buffer_size:0")
    try:
        return reader.num_records()
    finally:
        reader.close()


def shard_problems(directory: str, shards: Sequence[ShardInfo], content: bool = False) -> list[str]:
    """One line per shard (record or text-embedding shard) that is not what the manifest records: missing, another
    size, another record count — and with `content`, other bytes than its recorded SHA-256. [] when all match.
    Sizes are checked first, without reading a shard, so a truncated file never reaches the ArrayRecord reader."""
    problems = []
    for shard in shards:
        path = fileio.join(directory, shard.path)
        size = fileio.size(path) if fileio.exists(path) else None
        problem = shard.problem(size)
        if problem is None:
            with local_copy(path) as local:
                try:
                    records = _count_records(local)
                except RuntimeError as e:  # a corrupt footer or chunk
                    problem = f"shard {shard.path} does not read as ArrayRecord: {str(e).strip().splitlines()[0]}"
                else:
                    problem = shard.problem(size, records, fileio.sha256(local) if content else None)
        if problem:
            problems.append(problem)
    return problems


def localize(path: str, manifest: Manifest, files: Sequence[tuple[str, int | None]], cache_dir: str,
             threads: int = 8) -> tuple[str, int]:
    """(a local directory holding `files` of `path`'s converted output, bytes fetched for it).

    A local path (a FUSE mount included: gcsfuse, as MaxText reads ArrayRecord on GCS) is read where it is and
    nothing is fetched. A remote one is copied — only `files`, (relative path, size or None), in `threads` parallel
    streams — into a directory of `cache_dir` named by the source path and its manifest's bytes, so a re-converted
    source never mixes with an old copy. Each file is renamed into place when complete, so a file present with its
    recorded size is kept and an interrupted copy resumes; processes on one host may share the cache (they read
    different shards)."""
    if not fileio.is_remote(path):
        return path, 0
    from concurrent.futures import ThreadPoolExecutor

    manifest_bytes = manifest.dumps().encode("utf-8")
    name = hashlib.sha256(path.rstrip("/").encode() + b"\0" + manifest_bytes).hexdigest()[:16]
    local = os.path.join(cache_dir, name)
    os.makedirs(local, exist_ok=True)

    def fetch(file: tuple[str, int | None]) -> int:
        relative, size = file
        target = os.path.join(local, relative)
        if os.path.exists(target) and (size is None or os.path.getsize(target) == size):
            return 0
        return fileio.fetch(fileio.join(path, relative), target)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        fetched = sum(pool.map(fetch, files))
    if not os.path.exists(os.path.join(local, MANIFEST_NAME)):  # the directory's name holds its hash: same bytes
        fileio.publish(manifest_bytes, os.path.join(local, MANIFEST_NAME))
    return local, fetched


@contextlib.contextmanager
def _opened_shard(directory: str, manifest: Manifest, shard: ShardInfo, cache_dir: str | None) -> Iterator[object]:
    """An ArrayRecordReader of `shard`, from a local copy when the directory is remote (see `iter_record_bytes`);
    riegeli's errors while reading become a `ShardIntegrityError` naming the shard."""
    from array_record.python.array_record_module import ArrayRecordReader

    if cache_dir and fileio.is_remote(directory):
        local_dir, _ = localize(directory, manifest, [(shard.path, shard.bytes)], cache_dir)
        opened = contextlib.nullcontext(os.path.join(local_dir, shard.path))
    else:
        opened = local_copy(fileio.join(directory, shard.path))
    with opened as local:
        try:
            reader = ArrayRecordReader(local, "readahead_buffer_size:0")
            try:
                yield reader
            finally:
                reader.close()
        except RuntimeError as e:  # riegeli checks every chunk's hash: altered bytes fail here
            raise ShardIntegrityError(f"shard {shard.path} is corrupt: {str(e).strip().splitlines()[0]}") from None


def iter_record_bytes(directory: str, manifest: Manifest | None = None, shards: Sequence[ShardInfo] | None = None,
                      cache_dir: str | None = None) -> Iterator[bytes]:
    """The encoded records of `shards` (default: all of the manifest's), in order. A remote shard is copied whole
    before it is read: to `cache_dir` (kept, as `localize` does) when given, else to a temporary file, one shard at
    a time — so a reader that stops early copies no further shard."""
    manifest = manifest or read_manifest(directory)
    shards = manifest.shards if shards is None else shards
    for shard in shards:
        with _opened_shard(directory, manifest, shard, cache_dir) as reader:
            records = reader.read_all()
        yield from records


def read_record_range(directory: str, manifest: Manifest, shard: ShardInfo, begin: int, end: int,
                      cache_dir: str | None = None) -> list[bytes]:
    """The encoded records [begin, end) of one shard: random access, so a local shard reads only those (a remote one
    is copied whole first, as `iter_record_bytes` does; give `cache_dir` to copy it once for many reads)."""
    if not 0 <= begin <= end <= shard.records:
        raise IndexError(f"records [{begin}, {end}) are outside shard {shard.path}'s {shard.records}")
    if begin == end:
        return []
    with _opened_shard(directory, manifest, shard, cache_dir) as reader:
        return list(reader.read(begin, end))


def iter_records(directory: str, manifest: Manifest | None = None, shards: Sequence[ShardInfo] | None = None,
                 validate: bool = True, cache_dir: str | None = None) -> Iterator[rec.ClipRecord]:
    """Every record of `shards` (default: all), decoded (and validated unless `validate` is False), in manifest
    order. See `iter_record_bytes` for how remote shards are read."""
    for data in iter_record_bytes(directory, manifest, shards, cache_dir):
        yield rec.decode(data, validate_record=validate)


def iter_dead_letter(directory: str, manifest: Manifest | None = None) -> Iterator[Rejection]:
    """Every rejection in the directory's dead-letter files, in manifest order (one file in memory at a time)."""
    manifest = manifest or read_manifest(directory)
    for name in manifest.dead_letter:
        for line in fileio.read_text(fileio.join(directory, name)).splitlines():
            yield Rejection.from_json_line(line)


def decode_resized(frames: Sequence[bytes], stored: tuple[int, int], target: tuple[int, int],
                   out: np.ndarray | None = None) -> np.ndarray:
    """A record's encoded frames of `stored` size → uint8 RGB [n, *target, 3]; a frame that fails the image gate is a
    `RecordError` naming it.

    When the target is exactly 1/2, 1/4 or 1/8 of the stored size (the cascade's 192×320 → 48×80 → 24×40), a JPEG
    is decoded straight at that scale: libjpeg scales in the DCT, averaging like INTER_AREA, and skips most of the
    work. Otherwise frames are decoded whole and resized by the one resize rule (`fileio.images.resize`); a reduced
    decode followed by a second resize was measured visibly further from that."""
    import cv2

    factor = next((f for f in (8, 4, 2) if (stored[0], stored[1]) == (target[0] * f, target[1] * f)), 1)
    flag = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    out = np.empty((len(frames), *target, 3), np.uint8) if out is None else out
    for i, frame in enumerate(frames):
        try:  # the gate every decode passes: a shard is data, and a corrupt one must not allocate without bound
            image = images.decode(frame, flag)
        except images.ImageError as e:
            raise rec.RecordError("frames", f"frame {i}: {e}") from None
        if factor > 1:  # the reduced modes give BGR
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out[i] = images.resize(image, target)
    return out
