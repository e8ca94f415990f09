"""The output directory: preparing it, writing ArrayRecord shards, publishing files atomically. Any Beam filesystem.

array_record's writer only writes local paths, so a shard is written to local scratch and then copied through
Beam's `FileSystems` (gs://, or any registered scheme) under a temporary name and renamed into place. Local
outputs skip the copy. Shard names are deterministic, so a retried or re-run write replaces a file with the same
bytes, and a file only ever appears under its final name complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable

from apache_beam.io.filesystems import FileSystems

from unisim.schemas.dead_letter import is_dead_letter_name
from unisim.schemas.manifest import ARRAY_RECORD_OPTIONS, MANIFEST_NAME, RECORD_PREFIX, SHARD_SUFFIX
from unisim.schemas.text_embeddings import EMBEDDING_PREFIX, KEYS_SUFFIX

TMP_PREFIX = ".tmp-"  # files (and folders) a run is still writing
_COPY_CHUNK = 16 << 20


def is_local(path: str) -> bool:
    return "://" not in path


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)


def _ours(name: str) -> bool:
    return (name == MANIFEST_NAME or is_dead_letter_name(name) or name.startswith(TMP_PREFIX)
            or (name.startswith(f"{RECORD_PREFIX}-") and name.endswith(SHARD_SUFFIX))
            or (name.startswith(f"{EMBEDDING_PREFIX}-") and name.endswith((SHARD_SUFFIX, KEYS_SUFFIX))))


def prepare_output_dir(output: str) -> None:
    """Makes `output` ready for a fresh run: clears a previous (complete or killed) run's files.

    The old manifest goes first, so an interrupted clean-up never leaves a manifest pointing at missing shards.
    Refuses a directory holding files this tool did not write, rather than deleting or mixing with them.
    """
    pattern = join(output, "*")
    names = sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)
    foreign = [p for p in names if not _ours(p.rstrip("/").rsplit("/", 1)[-1])]
    if foreign:
        raise FileExistsError(
            f"output directory {output} holds files that are not UniSim shards (e.g. {foreign[0]}); "
            "choose an empty or new directory")
    manifest = join(output, MANIFEST_NAME)
    if manifest in names:
        FileSystems.delete([manifest])
    rest = [p for p in names if p != manifest]
    if rest:
        FileSystems.delete(rest)
    if is_local(output):
        os.makedirs(output, exist_ok=True)
        for name in os.listdir(output):  # a killed local run's spill folder (`pipelines.spill`); match skips folders
            if name.startswith(TMP_PREFIX) and os.path.isdir(os.path.join(output, name)):
                shutil.rmtree(os.path.join(output, name))


def remove(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def publish_bytes(data: bytes, destination: str) -> None:
    """Writes `data` to `destination` atomically (temporary name, then rename)."""
    temporary = _temporary_name(destination)
    with FileSystems.create(temporary) as f:
        f.write(data)
    _rename(temporary, destination)


def write_shard(records: Iterable[bytes], destination: str) -> tuple[int, int]:
    """Writes one ArrayRecord shard (`ARRAY_RECORD_OPTIONS`); returns (records, bytes)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    local_dir = os.path.dirname(destination) if is_local(destination) else tempfile.mkdtemp(prefix="unisim-shard-")
    local_path = _temporary_name(os.path.join(local_dir, os.path.basename(destination)))
    count = 0
    try:
        writer = ArrayRecordWriter(local_path, ARRAY_RECORD_OPTIONS)
        for record in records:
            writer.write(record)
            count += 1
        writer.close()
        size = os.path.getsize(local_path)
        if is_local(destination):
            _rename(local_path, destination)
        else:
            temporary = _temporary_name(destination)
            with open(local_path, "rb") as src, FileSystems.create(temporary) as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
            _rename(temporary, destination)
    finally:
        if os.path.exists(local_path):
            os.remove(local_path)
        if not is_local(destination):
            shutil.rmtree(local_dir, ignore_errors=True)
    return count, size


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8")


def _temporary_name(destination: str) -> str:
    head, _, name = destination.rpartition("/")
    return f"{head}/{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"


def _rename(source: str, destination: str) -> None:
    if is_local(destination):
        os.replace(source, destination)  # atomic on POSIX, and replaces an old file of the same name
        return
    if FileSystems.exists(destination):
        FileSystems.delete([destination])
    FileSystems.rename([source], [destination])
