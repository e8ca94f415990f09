"""Running the convert pipeline: `run` checks the setup, prepares the output, builds the pipeline
(`pipelines.transforms.build`, options in `pipelines.config`) on the chosen runner, runs it and checks that no record
was lost — or, with `--dry_run`, returns the job a remote runner built (`DryRun`) without running it.

Local runs use Beam's FnApiRunner directly (never the Prism download that DirectRunner may try) with one worker or
`worker_processes` SDK worker processes, clip threads inside each (`pipelines.lanes`) and records spilled to disk
across the shuffle (`pipelines.spill`); multi-worker runs need a Beam work-around, held for the run only
(`pipelines.beam_workarounds`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import sys
import tempfile
from typing import Any

import apache_beam as beam
from apache_beam.portability import common_urns
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions

from unisim import fileio
from unisim.adapters import registry
from unisim.pipelines import output as out
from unisim.pipelines import resume, shards
from unisim.pipelines.beam_workarounds import check_beam_version, flush_runner_data_by_size
from unisim.pipelines.config import ConvertConfig, TextOptions  # noqa: F401  (re-exported: convert.TextOptions)
from unisim.pipelines.transforms import build
from unisim.schemas.manifest import MANIFEST_NAME, Manifest
from unisim.shards import reader

_NAMESPACE = shards.NAMESPACE
LOCAL_RUNNERS = ("local", "DirectRunner", "FnApiRunner")


def pipeline_options(beam_args: list[str], runner: str, worker_processes: int = 1) -> tuple[Any, PipelineOptions]:
    """The runner object and options. Local runs use FnApiRunner (nothing downloaded): one worker in this process,
    or with `worker_processes` N >= 2, N SDK worker processes that the runner feeds in parallel — run inside
    `beam_workarounds.flush_runner_data_by_size()`, as `run` does, or records may vanish."""
    if worker_processes < 1:
        raise ValueError(f"worker_processes must be >= 1, got {worker_processes}")
    options = PipelineOptions(beam_args)
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = worker_processes
        direct.direct_running_mode = "multi_processing" if worker_processes > 1 else "in_memory"
        return FnApiRunner(), options
    if worker_processes > 1:
        raise ValueError(f"--worker_processes is for the local runner; {runner} sizes its own workers")
    options.view_as(StandardOptions).runner = runner
    return runner, options


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What `--dry_run` built instead of running: the job's named steps and what its workers would install."""

    runner: str
    steps: list[str]  # every transform's full name, e.g. "MakeClips/Clip"
    staged: dict[str, str]  # name the workers see → local file Beam built for it (the project's sdist, …)
    units: int
    images: list[str] = dataclasses.field(default_factory=list)  # the workers' container images
    # step → its resource hints (e.g. {"accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"}): the steps
    # Dataflow runs on other workers than the job's default
    hints: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    workers: dict[str, object] = dataclasses.field(default_factory=dict)  # machine type, disk, experiments


def is_dry_run(beam_args: list[str] | None) -> bool:
    """`--dry_run` among Beam's flags: build the whole job offline, submit nothing, write nothing."""
    return PipelineOptions(beam_args or []).view_as(TestOptions).dry_run


def run(config: ConvertConfig, beam_args: list[str] | None = None, runner: str = "local", clip_threads: int = 1,
        command: str | None = None, worker_processes: int = 1,
        keep_finished: bool = True) -> tuple[Manifest, dict[str, int]] | DryRun:
    """Converts one dataset; returns the manifest it wrote and the Beam counters of the run — or, with `--dry_run`
    in `beam_args` and a remote runner, the `DryRun` of the job it built without touching the output.

    `keep_finished`: each finished episode's outputs are kept beside the output (`pipelines/resume.py`) until the
    run completes, so that the same command run again after a failure redoes only the episodes that did not finish
    (counters `episodes_resumed` / `episodes_converted`) and writes the same bytes.

    Raises early, with a clear message, on a bad setup (unknown dataset, missing source, foreign output files).
    """
    if clip_threads < 1:
        raise ValueError(f"clip_threads must be >= 1, got {clip_threads}")
    multi_worker_local = runner in LOCAL_RUNNERS and worker_processes > 1
    if multi_worker_local:  # before touching the output; entering `flush_runner_data_by_size` checks it again
        check_beam_version()
    dry_run = is_dry_run(beam_args)
    if dry_run and runner in LOCAL_RUNNERS:
        raise ValueError("--dry_run builds a job for a remote runner (e.g. --runner DataflowRunner); the local "
                         "runner has no job to build")
    adapter = registry.create(config.dataset, config.source, config.split, config.adapter_options)
    units = adapter.work_units()
    if not units:
        raise FileNotFoundError(f"{config.dataset}: found nothing to read under {config.source}")
    config.text.conditioning(adapter.dataset_name, bool(adapter.control_names))  # a bad prefix fails before any I/O
    identity = None
    if config.text.encoder is not None:  # before touching the output: a bad checkpoint path fails fast
        from unisim.encoders.t5 import encoder_identity

        identity = encoder_identity(config.text.encoder.path, config.text.encoder.max_tokens)
    kept = resume.EpisodeStore(resume.folder(config.output) if keep_finished else None)  # the dry run's job too
    if not dry_run:  # a dry run never touches the output (which may be a bucket this machine cannot reach)
        run_fingerprint = resume.fingerprint(config.to_json(), units)
        reuse = keep_finished and resume.matches(config.output, run_fingerprint)
        out.prepare_output_dir(config.output, keep=resume.RESUME_NAME if reuse else None)
        if keep_finished:
            finished = resume.start(config.output, run_fingerprint)
            kept = dataclasses.replace(kept, look=finished > 0)
            if finished:
                print(f"[convert] resuming: {finished:,} episodes finished by an earlier run of this command are "
                      f"kept; the rest are converted", file=sys.stderr)
    command = command if command is not None else shlex.join(sys.argv)
    runner_obj, options = pipeline_options(beam_args or [], runner, worker_processes)
    if dry_run:
        pipeline = beam.Pipeline(runner=runner_obj, options=options)
        build(pipeline, config, adapter, units, command, identity, clip_threads)
        return _dry_run(runner, pipeline.run(), len(units))
    spill_dir = _spill_folder(config.output) if runner in LOCAL_RUNNERS else None
    # The multi-worker work-around (a Beam module global) is set for this run only and restored after it.
    workaround = flush_runner_data_by_size() if multi_worker_local else contextlib.nullcontext()
    try:
        with workaround:
            pipeline = beam.Pipeline(runner=runner_obj, options=options)
            build(pipeline, config, adapter, units, command, identity, clip_threads, spill_dir, kept)
            result = pipeline.run()
            result.wait_until_finish()
    except RuntimeError as e:
        output_error = _output_error(e)
        if output_error is None or config.output.rstrip("/") not in output_error:  # not the output's: as it was
            raise
        raise OSError(f"writing {config.output} failed, nothing was published as complete (no manifest): "
                      f"{output_error}") from None
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
                if c.key.metric.namespace == _NAMESPACE}
    manifest = reader.read_manifest(config.output)
    check_nothing_lost(config.output, manifest, counters)
    if kept.folder:
        resume.finish(config.output)
    return manifest, counters


def _output_error(error: BaseException) -> str | None:
    """The OSError a worker hit (full disk, read-only output, lost permissions) behind the runner's RuntimeError —
    found in the exception chain, or in the message, which is all a remote worker's error leaves — else None."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    message = str(error)
    for kind in ("OSError", "PermissionError", "FileNotFoundError", "IsADirectoryError"):
        if message.startswith(f"{kind}: "):
            return message[len(kind) + 2:].split(" [while running")[0]
    return None


def _dry_run(runner: str, result, units: int) -> DryRun:
    """The job a runner built in dry-run mode (DataflowRunner keeps it as `result.job`)."""
    job = getattr(result, "job", None)
    proto = getattr(job, "proto_pipeline", None)
    if proto is None:
        raise ValueError(f"--dry_run: runner {runner} built no job to show (DataflowRunner does)")
    from apache_beam.portability.api import beam_runner_api_pb2

    steps = sorted(t.unique_name for t in proto.components.transforms.values() if t.unique_name)
    staged, images, hints = {}, set(), {}
    for transform in proto.components.transforms.values():
        env = proto.components.environments.get(transform.environment_id) if transform.environment_id else None
        if env is not None and env.resource_hints:  # urn "beam:resources:accelerator:v1" → "accelerator"
            hints[transform.unique_name] = {urn.split(":")[2]: value.decode()
                                            for urn, value in env.resource_hints.items()}
    for env in proto.components.environments.values():
        if env.urn == common_urns.environments.DOCKER.urn:
            images.add(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image)
        for artifact in env.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
            staged[role.staged_name] = path
    from apache_beam.options.pipeline_options import DebugOptions, WorkerOptions

    worker, debug = job.options.view_as(WorkerOptions), job.options.view_as(DebugOptions)
    workers = {"machine_type": worker.machine_type, "disk_size_gb": worker.disk_size_gb,
               "max_num_workers": worker.max_num_workers, "experiments": sorted(debug.experiments or [])}
    return DryRun(runner=runner, steps=steps, staged=dict(sorted(staged.items())), units=units, images=sorted(images),
                  hints=dict(sorted(hints.items())), workers=workers)


def _spill_folder(output: str) -> str:
    """Inside a local output (same disk as the shards; cleared with a killed run's files), else system temp."""
    if not fileio.is_remote(output):
        return tempfile.mkdtemp(prefix=out.TMP_PREFIX + "spill-", dir=output)
    return tempfile.mkdtemp(prefix="unisim-spill-")


class LostRecordsError(RuntimeError):
    """The runner reported success but some encoded records never reached a shard."""


def check_nothing_lost(output: str, manifest: Manifest, counters: dict[str, int]) -> None:
    """Every encoded record must be in a shard or rejected as a duplicate; otherwise the output is withdrawn
    (its manifest deleted, so `inspect` and the trainer refuse it) and the run fails. Added after a local runner
    lost records (see `beam_workarounds.flush_runner_data_by_size`); records lost before encoding are not seen here."""
    encoded = counters.get("records_encoded")
    if encoded is None:  # a runner that does not report counters
        return
    reasons = manifest.rejected_reasons
    accounted = manifest.records + reasons.get("duplicate_key", 0) + reasons.get("conflicting_key", 0)
    if encoded > accounted:
        fileio.remove(fileio.join(output, MANIFEST_NAME))
        raise LostRecordsError(
            f"{encoded} records were encoded but {accounted} reached the shards or the dead letter: the runner "
            f"lost {encoded - accounted}. The output in {output} is withdrawn (no manifest); re-run it "
            "(with --worker_processes 1 if it had more) and report it: it is a bug.")
