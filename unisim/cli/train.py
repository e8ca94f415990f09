"""Train a model stage: the base model, or a super-resolution stage (`config.stage`).

    unisim train --config trainer/configs/tiny.py --workdir runs/tiny --mixture DIR:1 [--steps N] [--config.k=v …]

`--config` is a `.py` file defining `get_config()` (trainer/configs/); any field can be overridden with
`--config.key=value`, e.g. `--config.optimizer.learning_rate=3e-3`. A run resumes from its latest checkpoint in
`--workdir`. Multi-host: `--distributed` on every process of a TPU pod slice or a SLURM job (jax.distributed finds
the others), or `--coordinator_address HOST:PORT --num_processes N --process_id I` anywhere (docs/accelerators.md).

    unisim train --config trainer/configs/base.py --compile_only --topology v5e-256 --config.bf16=True

compiles the train step for an accelerator slice on this machine, without one, and reports whether it fits and how
fast it should run (`trainer/aot.py`, docs/accelerators.md)."""

from __future__ import annotations

import dataclasses
import os

from unisim.schemas.options import add_flags, from_flags, option

PASSES_UNKNOWN_FLAGS = True  # --config.key=value overrides


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    config: str = option(help="a trainer config .py file (trainer/configs/)", metavar="FILE.py")
    workdir: str | None = option(None, "checkpoints, TensorBoard events, metrics.jsonl and run.json go here "
                                 "(required unless --compile_only)")
    mixture: str | None = option(None, "mixture .py file or DIR:WEIGHT,… (none: the config's)")
    steps: int | None = option(None, "train until this step (none: the config's)")
    distributed: bool = option(False, "multi-process: join the others through jax.distributed, which finds them on a "
                                      "TPU pod slice or under SLURM (srun); elsewhere give the three flags below")
    coordinator_address: str | None = option(None, "multi-process: HOST:PORT of process 0")
    num_processes: int | None = option(None, "multi-process: how many")
    process_id: int | None = option(None, "multi-process: this one's index")
    compile_only: bool = option(False, "compile the train step for --topology and report memory, FLOPs and the "
                                       "projected step time; train nothing")
    topology: str = option("cpu-1", "--compile_only: the target, e.g. v5e-256, v4-512, v5p-128, v3-1024, cpu-8")
    text_dim: int = option(4096, "--compile_only: the text embedding width (T5-XXL's: 4096)")
    control_dims: int = option(10, "--compile_only: control values per frame (the widest source's; RT-1: 10)")
    utilization: float = option(0.4, "--compile_only: the fraction of the chip's peak the step time is projected at")
    peak_tflops: float | None = option(None, "--compile_only: peak bf16 TFLOP/s per device (default: the target's)")
    hbm_gib: float | None = option(None, "--compile_only: memory per device in GiB (default: the target's)")
    report: str | None = option(None, "--compile_only: also write the report as JSON here", metavar="FILE.json")


def add_arguments(parser) -> None:
    add_flags(parser, TrainOptions)
    parser.epilog = "Overrides: --config.KEY=VALUE for any field of the config (e.g. --config.input.batch_size=8)."


def overrides(rest: list[str]) -> list[str]:
    """`--config.a=b` and `--config.a b` words → ["config.a=b", …]; anything else is an error."""
    out, i = [], 0
    while i < len(rest):
        word = rest[i]
        if not word.startswith("--config."):
            raise ValueError(f"unrecognised argument {word!r} (config fields are set with --config.KEY=VALUE)")
        if "=" in word:
            out.append(word[2:])
        elif i + 1 < len(rest):
            out.append(f"{word[2:]}={rest[i + 1]}")
            i += 1
        else:
            raise ValueError(f"{word} needs a value")
        i += 1
    return out


def run(args, rest: list[str]) -> int:
    options = from_flags(TrainOptions, args)
    if options.compile_only:
        # This machine's CPU runs the compiler; with libtpu installed, JAX would otherwise look for a TPU here.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    elif not options.workdir:
        raise ValueError("--workdir is required (except with --compile_only)")
    from unisim.trainer import configs

    config = configs.load(options.config, overrides(rest))
    return compile_only(config, options) if options.compile_only else train(config, options)


def compile_only(config, options: TrainOptions) -> int:
    import json

    from unisim import fileio
    from unisim.trainer import aot

    target = aot.target(options.topology, options.peak_tflops, options.hbm_gib)
    report = aot.compile_step(config, target, options.text_dim, options.control_dims, options.utilization)
    print(aot.format_report(report))
    if options.report:
        fileio.publish(json.dumps(report.to_json(), indent=1).encode(), options.report)
    return 0


def train(config, options: TrainOptions) -> int:
    import jax

    from unisim.trainer import train as trainer

    if options.distributed or options.num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; ignored by accelerators
        # Flags not given (None) are found by jax's cluster detection (TPU VM metadata, SLURM's variables).
        jax.distributed.initialize(options.coordinator_address, options.num_processes, options.process_id)
    rows = trainer.train(config, options.workdir, options.mixture, options.steps)
    if rows:
        print(f"[train] done: step {rows[-1]['step']}, loss {rows[-1]['loss']:.4f}; see {options.workdir}")
    return 0
