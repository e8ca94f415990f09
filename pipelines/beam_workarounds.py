"""Work-arounds for defects of the installed Apache Beam, each a context manager that sets a Beam module global for
one run and puts the previous value back after it: the globals are Beam's and shared by the whole process (other
pipelines, tests), so nothing here stays patched once its run has finished.

Each work-around was verified on particular Beam releases (`VERIFIED_BEAM`); on any other it refuses to run
(`UntestedBeamError`) instead of patching blind — see `check_beam_version` for why that is an error, not a warning.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from unisim.schemas.errors import UserError

# The Beam releases `flush_runner_data_by_size` was verified on, from (inclusive) to (exclusive): the defect and the
# fix were measured on 2.77.0 (tests/test_beam_lost_elements.py, tests/test_multiworker.py; requirements.lock pins
# it). 2.77 patch releases are admitted: Beam's patch releases carry only cherry-picked fixes. To admit a newer
# release, run those two tests on it (the first shows whether the defect is still there, without the work-around)
# and move the bound.
VERIFIED_BEAM = ((2, 77, 0), (2, 78, 0))


class UntestedBeamError(UserError):
    """The installed Beam is outside the releases a work-around was verified on. The user's to fix (one worker, or
    a verified Beam), so `unisim` prints it as one line."""


def _release(version: str) -> tuple[int, ...] | None:
    """"2.77.0" → (2, 77, 0); a pre-release or dev suffix ("2.78.0rc1", "2.78.0.dev0") counts as its release;
    None for a version that does not start with numbers."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def check_beam_version(version: str | None = None) -> None:
    """Raises `UntestedBeamError` unless `version` (default: the installed apache-beam's) is in `VERIFIED_BEAM`.

    An error, not a warning: what the work-around prevents is records vanishing between `MakeClips` and `Tokenize`,
    before they are counted as encoded, so `convert.check_nothing_lost` would not see it and the run would end
    "successfully" with records missing; a warning scrolls past. On another Beam the global may be renamed or read
    elsewhere (the patch then silently does nothing) while the race remains. Only multi-worker local runs need the
    work-around, so the remedy is at hand: one worker (`--worker_processes 1`, the default) or a verified Beam."""
    if version is None:
        import apache_beam

        version = apache_beam.__version__
    low, high = VERIFIED_BEAM
    release = _release(version)
    if release is None or not low <= release < high:
        raise UntestedBeamError(
            f"--worker_processes >= 2 relies on a work-around for a Beam FnApiRunner defect that loses records "
            f"silently (pipelines/beam_workarounds.py); it was verified on apache-beam "
            f"{'.'.join(map(str, low))} up to (not including) {'.'.join(map(str, high))}, and {version} is "
            f"installed. Run with --worker_processes 1, or install a verified apache-beam (requirements.lock).")


@contextlib.contextmanager
def flush_runner_data_by_size() -> Iterator[None]:
    """Works around the Beam defect that lost records in multi-worker local runs (tests/test_beam_lost_elements.py).

    With 2+ workers, FnApiRunner talks to its workers over gRPC, and its data server buffers what it sends with a
    1,000 ms periodic flush (`worker_handlers.DATA_BUFFER_TIME_LIMIT_MS`). That flush takes the buffer, sends it,
    then clears it, while `_send_input_to_worker` keeps writing chunks into the same buffer without the lock:
    chunks written during a send are cleared unsent, and the stage's elements vanish without an error. Large
    elements make the sends long, hence the losses of whole runs of clip records. Size-based flushing alone
    (what the value 0 selects, and what Beam's SDK workers use by default) has no second thread. Read when the
    runner builds its gRPC server, so it must be set before `pipeline.run()`: the `with` block must hold the
    whole run (FnApiRunner's `run()` returns when the pipeline has finished). Checks the Beam version first
    (`check_beam_version`) and restores the previous value on leaving, error or not.
    """
    check_beam_version()
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    previous = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
    try:
        yield
    finally:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = previous
