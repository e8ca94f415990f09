"""Roll a trained model out from an image through a list of actions into a GIF or MP4.

    unisim rollout --checkpoint runs/base --image start.png --actions "push the red block left" "push it up" \
        --output rollout.gif
    unisim rollout --checkpoint runs/base --super_resolution runs/sr1 --image start.png \
        --controls 0.02,0 0.02,0 0,-0.03 --output rollout.mp4
    unisim rollout --checkpoint runs/base --text_only --actions "a person opens a fridge" --output t2v.gif

`--checkpoint` is a `unisim train` workdir (its latest checkpoint) or a `checkpoints/STEP` folder inside it. With
both `--actions` and `--controls`, step i takes text i and controls i together. The sampler defaults to 16
deterministic (DDIM) steps; `--sampler ancestral --steps 256` is the paper's."""

from __future__ import annotations

import dataclasses
import sys

from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class StageOptions:
    """Which trained stages make the simulator (shared by rollout, serve and eval)."""

    checkpoint: str = option(help="the base model: a `unisim train` workdir or a checkpoints/STEP folder in it",
                             metavar="DIR")
    super_resolution: tuple[str, ...] = option((), "super-resolution workdirs, in order", nargs="+", metavar="DIR")
    text_encoder: str | None = option(None, "T5 checkpoint (none: the one the run recorded)", metavar="PATH")


@dataclasses.dataclass(frozen=True)
class RolloutOptions:
    output: str = option(help="where the video goes: out.gif or out.mp4")
    image: str | None = option(None, "the initial observation (any size; resized to the model's), local or gs://")
    text_only: bool = option(False, "start from white placeholder frames instead of --image")
    actions: tuple[str, ...] = option((), "text actions, one per step", nargs="+", metavar="TEXT")
    controls: tuple[str, ...] = option((), "control vectors, one per step: comma-separated raw values",
                                       nargs="+", metavar="V1,V2")
    source: str | None = option(None, "whose control statistics (a mixture source name; none: the only one)")
    seed: int = option(0, "random seed of the rollout: the same seed gives the same frames")
    fps: float | None = option(None, "output frame rate (none: the training data's)")


def add_simulator_arguments(parser, command_options) -> None:
    """The flags of a command that builds a simulator (rollout, serve, play): the stages, the command's own
    `command_options` and the sampler's; `simulator_of` reads the stages and the sampler back."""
    from unisim.simulator.core import SamplerSettings

    add_flags(parser, StageOptions)
    add_flags(parser, command_options)
    add_flags(parser.add_argument_group("sampler"), SamplerSettings)


def add_arguments(parser) -> None:
    add_simulator_arguments(parser, RolloutOptions)


def simulator_of(stages: StageOptions, args, **kwargs):
    """The simulator the stage and sampler flags describe."""
    from unisim.simulator.core import SamplerSettings, Simulator

    return Simulator.from_checkpoints(stages.checkpoint, stages.super_resolution,
                                      sampler=from_flags(SamplerSettings, args), text_encoder=stages.text_encoder,
                                      **kwargs)


def run(args, _rest) -> int:
    from unisim.simulator import rollout

    stages, options = from_flags(StageOptions, args), from_flags(RolloutOptions, args)
    if bool(options.image) == options.text_only:
        raise ValueError("give exactly one of --image FILE and --text_only")
    actions = rollout.parse_actions(list(options.actions), list(options.controls), options.source)
    image = None if options.text_only else rollout.read_image(options.image)
    simulator = simulator_of(stages, args, max_batch=1)
    rollout.record(simulator, image, actions, options.output, seed=options.seed, fps=options.fps,
                   log=lambda line: print(line, file=sys.stderr))
    return 0
