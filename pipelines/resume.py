"""What a killed or failed conversion keeps: each finished episode's clips, rejections and control rows, so that a
re-run of the same command redoes only the episodes that did not finish and ends with the same bytes.

    <output>/.tmp-resume/fingerprint           the run it belongs to: a hash of the options, the work units and
                                               RESUME_VERSION (another run's folder is cleared, never reused)
    <output>/.tmp-resume/episodes/<hash>.pkl   one finished episode's outputs, published whole (atomically)

Decoding, resizing and encoding frames is the cost of a conversion (`docs/scale.md`); everything after it —
statistics, tokens, shards, embeddings, the manifest — is recomputed from the kept outputs, which are what a fresh
run would make (the conversion is deterministic), so the output's bytes do not depend on where a run was stopped.
The folder is `.tmp-`named, so `unisim inspect` and the trainer never see it; the output cleaner owns it
(`pipelines/output.py`), and a run that completes deletes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from collections.abc import Iterable, Sequence

from unisim import fileio

RESUME_NAME = f"{fileio.TMP_PREFIX}resume"
RESUME_VERSION = 1  # raise when what an episode's outputs are (records, rejections, rows) changes


def folder(output: str) -> str:
    return fileio.join(output, RESUME_NAME)


def fingerprint(options: dict, units: Sequence[str]) -> str:
    """What a kept episode's outputs depend on: the conversion's options and its work units."""
    text = json.dumps({"version": RESUME_VERSION, "options": options, "units": list(units)}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def matches(output: str, expected: str) -> bool:
    """True when `output` holds a resume folder of the run `expected` fingerprints."""
    path = fileio.join(folder(output), "fingerprint")
    try:
        return fileio.read_text(path).strip() == expected
    except FileNotFoundError:
        return False


def start(output: str, run_fingerprint: str) -> int:
    """Marks the (cleaned) output's resume folder as this run's; returns how many finished episodes it holds."""
    fileio.makedirs(fileio.join(folder(output), "episodes"))
    fileio.publish(run_fingerprint.encode("utf-8"), fileio.join(folder(output), "fingerprint"))
    return len(fileio.listdir(fileio.join(folder(output), "episodes")))


def finish(output: str) -> None:
    """The run completed: its kept episodes are no longer needed."""
    fileio.remove(folder(output))


@dataclasses.dataclass(frozen=True)
class EpisodeStore:
    """Kept outputs by episode id, under a resume folder (None: keep nothing). `look`: whether an earlier run left
    any (`start`'s count) — a fresh run never looks episodes up (on a bucket, one failed request an episode)."""

    folder: str | None = None
    look: bool = True

    def _path(self, episode_id: str) -> str:
        name = hashlib.sha256(episode_id.encode("utf-8")).hexdigest()[:40]
        return fileio.join(self.folder, "episodes", f"{name}.pkl")

    def get(self, episode_id: str) -> list | None:
        """The episode's kept outputs, or None (not finished by an earlier run, or keeping is off)."""
        if self.folder is None or not self.look:
            return None
        try:
            data = fileio.read_bytes(self._path(episode_id))
        except FileNotFoundError:
            return None
        kept_id, outputs = pickle.loads(data)  # written by `put` below, in this output's own folder
        return outputs if kept_id == episode_id else None

    def put(self, episode_id: str, outputs: Iterable) -> None:
        if self.folder is not None:
            fileio.publish(pickle.dumps((episode_id, list(outputs)), protocol=5), self._path(episode_id))
