"""Train a model stage: the base model, or a super-resolution stage (`config.stage`).

    unisim train --config trainer/configs/tiny.py --workdir runs/tiny --mixture DIR:1 [--steps N] [--config.k=v …]

`--config` is a `.py` file defining `get_config()` (trainer/configs/); any field can be overridden with
`--config.key=value`, e.g. `--config.optimizer.learning_rate=3e-3`. A run resumes from its latest checkpoint in
`--workdir`. Multi-host: `--coordinator_address HOST:PORT --num_processes N --process_id I` on every process."""

from __future__ import annotations

import dataclasses

from unisim.schemas.options import add_flags, from_flags, option

PASSES_UNKNOWN_FLAGS = True  # --config.key=value overrides


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    config: str = option(help="a trainer config .py file (trainer/configs/)", metavar="FILE.py")
    workdir: str = option(help="checkpoints, TensorBoard events, metrics.jsonl and run.json go here")
    mixture: str | None = option(None, "mixture .py file or DIR:WEIGHT,… (none: the config's)")
    steps: int | None = option(None, "train until this step (none: the config's)")
    coordinator_address: str | None = option(None, "multi-process: HOST:PORT of process 0")
    num_processes: int | None = option(None, "multi-process: how many")
    process_id: int | None = option(None, "multi-process: this one's index")


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
    from unisim.trainer import configs

    config = configs.load(options.config, overrides(rest))
    return train(config, options)


def train(config, options: TrainOptions) -> int:
    import jax

    from unisim.trainer import train as trainer

    if options.num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; ignored by accelerators
        jax.distributed.initialize(options.coordinator_address, options.num_processes, options.process_id)
    rows = trainer.train(config, options.workdir, options.mixture, options.steps)
    if rows:
        print(f"[train] done: step {rows[-1]['step']}, loss {rows[-1]['loss']:.4f}; see {options.workdir}")
    return 0
