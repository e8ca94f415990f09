"""The whole chain on built-in samples, on a CPU: sample data in three official formats → convert each → a
weighted mixture → train the CPU base model (and its 1-history-frame ablation) → rollouts from a held-out frame →
`unisim eval` → report.html (unisim/demo.py says what each step does). `make demo` runs it."""

from __future__ import annotations

import dataclasses
import os

from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    workdir: str = option(os.environ.get("DEMO_OUT", "demo-output"), "everything goes here ($DEMO_OUT)")
    episodes: int = option(200, "tabletop training episodes")
    heldout_episodes: int = option(24, "tabletop held-out episodes (another seed)")
    budget_minutes: float = option(4.0, "training wall time of each of the two models")
    steps: int | None = option(None, "also stop each model at this step (smoke runs)")
    clip_threads: int = option(1, "threads making clips in the conversions", flag="direct_num_workers")
    text_encoder: str | None = option(None, "T5 checkpoint (none: write the tiny random stand-in)", metavar="PATH")


def add_arguments(parser) -> None:
    add_flags(parser, DemoOptions)


def run(args, _rest) -> int:
    from unisim import demo

    options = from_flags(DemoOptions, args)
    return demo.run(options.workdir, episodes=options.episodes, held_out_episodes=options.heldout_episodes,
                    budget_minutes=options.budget_minutes, steps=options.steps, clip_threads=options.clip_threads,
                    text_encoder=options.text_encoder)
