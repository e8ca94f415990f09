"""The output directory: preparing it and writing ArrayRecord shards into it, on any filesystem (`unisim.fileio`).

array_record's writer only writes local paths, so a shard is written to local scratch and then uploaded under a
temporary name and renamed into place. Local outputs skip the copy. Shard names are deterministic, so a retried or
re-run write replaces a file with the same bytes, and a file only ever appears under its final name complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable

from unisim import fileio
from unisim.schemas.dead_letter import is_dead_letter_name
from unisim.schemas.manifest import ARRAY_RECORD_OPTIONS, MANIFEST_NAME, RECORD_PREFIX, SHARD_SUFFIX
from unisim.schemas.text_embeddings import EMBEDDING_PREFIX, KEYS_SUFFIX

TMP_PREFIX = fileio.TMP_PREFIX  # files (and folders) a run is still writing


# What this tool names its temporaries: `fileio.temporary_name` (".tmp-" + 12 hex digits + "-" + the final name),
# the local spill folder (".tmp-spill-…") and the kept episodes of an unfinished run (".tmp-resume",
# `pipelines/resume.py`). Another ".tmp-…" (a user's ".tmp-notes/") is not ours.
_OUR_TEMPORARY = re.compile(re.escape(TMP_PREFIX) + r"([0-9a-f]{12}-.+|spill-.+|resume)")


def _ours(name: str) -> bool:
    return (name == MANIFEST_NAME or is_dead_letter_name(name) or bool(_OUR_TEMPORARY.fullmatch(name))
            or (name.startswith(f"{RECORD_PREFIX}-") and name.endswith(SHARD_SUFFIX))
            or (name.startswith(f"{EMBEDDING_PREFIX}-") and name.endswith((SHARD_SUFFIX, KEYS_SUFFIX))))


def _our_manifest(path: str) -> bool:
    """Whether a manifest.json was written by this tool, of any schema version (a user's own file of that name is
    not deleted)."""
    try:
        data = json.loads(fileio.read_text(path))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and {"schema_version", "dataset", "shards"} <= set(data)


def prepare_output_dir(output: str, keep: str | None = None) -> None:
    """Makes `output` ready for a fresh run: clears a previous (complete or killed) run's files, except the one
    named `keep` (a resumed run's kept episodes).

    The old manifest goes first, so an interrupted clean-up never leaves a manifest pointing at missing shards.
    Refuses a directory holding files this tool did not write, rather than deleting or mixing with them.
    """
    names = [fileio.join(output, name) for name in fileio.listdir(output)]  # hidden `.tmp-` names included
    foreign = [p for p in names if not _ours(fileio.basename(p))
               or (fileio.basename(p) == MANIFEST_NAME and not _our_manifest(p))]
    if foreign:
        raise FileExistsError(
            f"output directory {output} holds files that are not UniSim shards (e.g. {foreign[0]}); "
            "choose an empty or new directory")
    manifest = [p for p in names if fileio.basename(p) == MANIFEST_NAME]
    fileio.remove(manifest)  # first: an interrupted clean-up must not leave a manifest naming missing shards
    fileio.remove([p for p in names if p not in manifest  # a killed run's spill folder too (`pipelines.spill`)
                   and fileio.basename(p) != keep])
    fileio.makedirs(output)


def write_shard(records: Iterable[bytes], destination: str) -> tuple[int, int, str]:
    """Writes one ArrayRecord shard (`ARRAY_RECORD_OPTIONS`); returns (records, bytes, sha256 of the file)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    remote = fileio.is_remote(destination)
    local_dir = tempfile.mkdtemp(prefix="unisim-shard-") if remote else os.path.dirname(destination)
    local_path = fileio.temporary_name(os.path.join(local_dir, os.path.basename(destination)))
    count = 0
    try:
        writer = ArrayRecordWriter(local_path, ARRAY_RECORD_OPTIONS)
        for record in records:
            writer.write(record)
            count += 1
        writer.close()
        size = os.path.getsize(local_path)
        digest = fileio.sha256(local_path)  # of the bytes uploaded: `inspect --verify` recomputes it
        fileio.upload(local_path, destination)
    finally:
        if os.path.exists(local_path):
            os.remove(local_path)
        if remote:
            shutil.rmtree(local_dir, ignore_errors=True)
    return count, size, digest
