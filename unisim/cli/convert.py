"""Convert a dataset's official release into ArrayRecord clip shards + manifest.json + dead-letter files
(rejected-*.jsonl). Unrecognised --flags are passed to Beam (e.g. --project, --region, --temp_location,
--setup_file=./setup.py for Dataflow; --dry_run=True builds the job offline).

Every option but the run's own (runner, threads, adapter options) is a field of `pipelines.convert.ConvertConfig`."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time

from unisim.cli import plural
from unisim.pipelines.convert import ConvertConfig
from unisim.schemas.options import add_flags, from_flags, option

PASSES_UNKNOWN_FLAGS = True  # Beam's


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How this run executes (not part of the output: the same bytes whatever they are)."""

    adapter_option: tuple[str, ...] = option((), "an adapter option (repeatable; see `unisim adapters`), e.g. fps=3 "
                                                 "or actions=action/world_vector,action/rotation_delta",
                                             repeat=True, metavar="KEY=VALUE")
    adapter_config: str | None = option(None, "adapter options as a JSON object (local or gs://); --adapter_option "
                                              "overrides its keys", metavar="FILE.json")
    runner: str = option("local", "'local' (FnApiRunner, no downloads) or a Beam runner, e.g. DataflowRunner")
    clip_threads: int | None = option(None, "threads decoding, resizing and encoding inside each worker (none: "
                                            "--direct_num_workers on the local runner, 1 on others)")
    direct_num_workers: int = option(1, "local runs: use this many cores, as clip threads in one Beam worker")
    worker_processes: int = option(1, "local runs: N >= 2 runs N Beam SDK worker processes (FnApiRunner "
                                      "multi_processing), the same bytes as one")
    resume: bool = option(True, "keep each finished episode's outputs beside the output (.tmp-resume/, deleted when "
                                "the run completes), so that the same command after a failure redoes only the rest")


def add_arguments(parser) -> None:
    from unisim.pipelines.recipes import RECIPES

    add_flags(parser, ConvertConfig)
    add_flags(parser.add_argument_group("how the run executes"), RunOptions)
    parser.add_argument("--recipe", choices=list(RECIPES), metavar="NAME",
                        help="a Table 5 dataset's Dataflow recipe (docs/recipes.md): its flags first, yours after "
                             f"override them; one of {', '.join(RECIPES)}")


def expand_argv(argv: list[str]) -> list[str]:
    from unisim.pipelines.recipes import expand

    return expand(argv)


def adapter_options(config_file: str | None, pairs: tuple[str, ...]) -> dict:
    """--adapter_config's JSON object, then each --adapter_option KEY=VALUE on top of it."""
    from unisim import fileio

    options: dict = {}
    if config_file:
        try:
            options = json.loads(fileio.read_text(config_file))
        except json.JSONDecodeError as e:
            raise ValueError(f"--adapter_config {config_file}: not JSON ({e})") from None
        if not isinstance(options, dict):
            raise ValueError(f"--adapter_config {config_file}: expected a JSON object of options")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--adapter_option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options


def run(args, beam_args: list[str]) -> int:
    from unisim.pipelines import convert

    run_options = from_flags(RunOptions, args)
    config = from_flags(ConvertConfig, args,
                        adapter_options=adapter_options(run_options.adapter_config, run_options.adapter_option))
    if config.text.encoder is None:
        print("note: no --text_encoder: conditioning texts are written and counted but not embedded; the trainer "
              "refuses directories without embeddings", file=sys.stderr)
    start = time.monotonic()
    threads = run_options.clip_threads or (run_options.direct_num_workers
                                           if run_options.runner in convert.LOCAL_RUNNERS else 1)
    result = convert.run(config, beam_args, runner=run_options.runner, clip_threads=threads,
                         command=shlex.join(["unisim", *args.argv]), worker_processes=run_options.worker_processes,
                         keep_finished=run_options.resume)
    if isinstance(result, convert.DryRun):
        top = sorted({step.split("/")[0] for step in result.steps})
        print(f"dry run: built the {result.runner} job for {result.units} work units in {time.monotonic() - start:.1f} "
              f"s; nothing submitted, nothing written to {config.output}\nsteps: {', '.join(top)} "
              f"({len(result.steps)} transforms)\nworkers would install: "
              + (", ".join(result.staged) or "(nothing staged: give --setup_file ./setup.py, or a worker image)")
              + (f"\nworker image: {', '.join(result.images)}" if result.images else "")
              + f"\nworkers: {result.workers.get('machine_type') or 'the runner default machine'}, "
              f"{result.workers.get('disk_size_gb') or 'default'} GB disk, experiments "
              f"{', '.join(result.workers.get('experiments') or ['none'])}"
              + "".join(f"\nstep {step} runs with {', '.join(f'{k} {v}' for k, v in hints.items())}"
                        for step, hints in result.hints.items()))
        return 0
    manifest, counters = result
    elapsed = time.monotonic() - start
    frames = counters.get("frames_encoded", 0)
    sources = plural(manifest.source_episodes, "source image" if _images(manifest) else "source episode")
    print(f"converted {sources} → {plural(manifest.records, 'record')} in {plural(len(manifest.shards), 'shard')}, "
          f"{manifest.rejected} rejected {manifest.rejected_reasons or ''}")
    print(f"{elapsed:.1f} s: {manifest.source_episodes / elapsed:.2f} episodes/s, {frames / elapsed:.1f} frames/s "
          f"({frames} frames encoded, {threads} clip thread(s))")
    if counters.get("episodes_resumed"):
        print(f"resumed: {plural(counters['episodes_resumed'], 'episode')} kept from an earlier run of this command, "
              f"{plural(counters.get('episodes_converted', 0), 'episode')} converted now")
    if manifest.text_encoder:
        print(f"texts: {manifest.unique_texts} unique, {manifest.encoder_calls} through the encoder "
              f"({manifest.texts_truncated} truncated at {config.text.encoder.max_tokens} tokens), "
              f"encoder {manifest.text_encoder.fingerprint[:12]} from {manifest.text_encoder.path}")
    mapping = manifest.adapter.get("mapping")
    if mapping:
        print(f"read: image {mapping['image']}, text {mapping['text'] or '(none)'}, actions "
              f"{', '.join(mapping['actions']) or '(none)'} at {mapping['fps']} Hz"
              + (f", episode id {mapping['episode_id']}" if mapping["episode_id"] else ""))
    print(f"output: {config.output}")
    return 0


def _images(manifest) -> bool:
    return tuple(manifest.frames_per_record) == (1, 1)
