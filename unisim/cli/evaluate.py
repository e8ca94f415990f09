"""Does the simulator follow actions? Action-following error, PSNR, SSIM and FVD* on held-out tabletop clips, against
the null condition, copy-last-frame and shuffled controls (simulator/evaluation/evaluate.py says what each row is).

    unisim eval --checkpoint runs/base --data demo-output/clips/tabletop-heldout \
        [--history_ablation runs/base-1frame] [--clips 32] [--steps 8] [--segments 4] [--output eval.json]"""

from __future__ import annotations

import dataclasses
import json

from unisim import fileio
from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    checkpoint: str = option(help="the base model: a `unisim train` workdir or a checkpoints/STEP folder in it",
                             metavar="DIR")
    data: str = option(help="converted held-out tabletop clips (a `unisim convert` output folder)", metavar="DIR")
    history_ablation: str | None = option(None, "the same training with --config.input.history_frames=1",
                                          metavar="DIR")
    clips: int = option(32, "held-out clips to evaluate")
    segments: int = option(1, "N > 1: also roll the model out N segments autoregressively (recorded controls) on "
                              "held-out clips with N × frames target frames, per segment against copy-last-frame")
    rollout_data: str | None = option(None, "with --segments: the held-out clips for the rollouts (none: --data), "
                                            "converted with --frames_per_clip ≥ 2 × history + N × frames",
                                      metavar="DIR")
    fidelity_net: str = option("random-video", "random-video, i3d:PATH, … or '' for no FVD*")
    seed: int = option(0, "random seed of the samples")
    output: str | None = option(None, "write the result as JSON here (local or gs://)", metavar="FILE.json")


def add_arguments(parser) -> None:
    from unisim.simulator.core import SamplerSettings

    add_flags(parser, EvalOptions)
    add_flags(parser.add_argument_group("sampler (steps: 8 for ddim unless given, CPU-sized)"), SamplerSettings)


def run(args, _rest) -> int:
    from unisim.simulator.evaluation import evaluate
    from unisim.simulator.core import SamplerSettings

    options = from_flags(EvalOptions, args)
    sampler = from_flags(SamplerSettings, args)
    if not hasattr(args, "steps") and sampler.sampler == "ddim":
        sampler = dataclasses.replace(sampler, steps=8)  # CPU-sized default for evaluation
    result = evaluate.evaluate(options.checkpoint, options.data, history_ablation=options.history_ablation,
                               clips=options.clips, sampler=sampler, seed=options.seed,
                               fidelity_net=options.fidelity_net or None, segments=options.segments,
                               rollout_data=options.rollout_data)
    print(evaluate.format_table(result))
    if options.output:
        fileio.publish(json.dumps(result, indent=1).encode("utf-8"), options.output)  # local or gs://, atomic
        print(f"[eval] wrote {options.output}")
    return 0
