"""Trained stages from `unisim train` workdirs: the config and run description (`run.json`) and the EMA parameters.

    load_stage("runs/base")                  # a workdir: its latest checkpoint
    load_stage("runs/base/checkpoints/5000") # one checkpoint inside it

Only the EMA parameters are read (orbax partial restore): the optimizer state and the raw parameters, two thirds
of a checkpoint, stay on disk. Remote workdirs (gs://…) are read through orbax's own filesystem layer; `run.json`
through `unisim.fileio`.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import ml_collections

from unisim import fileio
from unisim.schemas.errors import UserError
from unisim.schemas.run import RUN_DESCRIPTION_NAME, RunDescription, RunDescriptionError
from unisim.trainer import stage


class CheckpointError(UserError):
    """A path that holds no usable trained stage."""


@dataclasses.dataclass
class Stage:
    path: str  # the workdir
    step: int
    config: ml_collections.ConfigDict
    description: RunDescription  # run.json: text encoder identity, sources with control statistics, …
    model: object  # VideoUNet
    params: dict  # EMA parameters
    # The simulator's jitted samplers for this stage, by (sampler, steps, gamma, frames): simulators that differ only
    # in guidance (a runtime input) share them, so e.g. `unisim eval`'s null-condition row compiles nothing new.
    samplers: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def super_resolution(self) -> bool:
        return self.config.stage == "super_resolution"

    @property
    def size(self) -> tuple[int, int]:
        return self.config.input.height, self.config.input.width


def resolve(path: str) -> tuple[str, int | None]:
    """(workdir, step or None for the latest) of a workdir, its checkpoints folder, or one checkpoint in it."""
    path = path.rstrip("/")
    parent, name = os.path.split(path)
    if re.fullmatch(r"\d+", name) and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(name)
    if name == "checkpoints":
        return parent, None
    return path, None


def load_stage(path: str) -> Stage:
    import orbax.checkpoint as ocp

    workdir, step = resolve(path)
    description_path = f"{workdir}/{RUN_DESCRIPTION_NAME}"
    if not fileio.exists(description_path):
        raise CheckpointError(f"{path}: no {RUN_DESCRIPTION_NAME} in {workdir} — expected a workdir written by "
                              "`unisim train` (or a checkpoints/STEP folder inside one)")
    try:
        description = RunDescription.loads(fileio.read_text(description_path), description_path)
    except RunDescriptionError as e:
        raise CheckpointError(str(e)) from None
    config = ml_collections.ConfigDict(description.config)
    checkpoints = f"{workdir}/checkpoints"
    manager = ocp.CheckpointManager(checkpoints if fileio.is_remote(checkpoints) else os.path.abspath(checkpoints),
                                    item_names=("state", "data"))
    steps = manager.all_steps()
    if not steps:
        raise CheckpointError(f"{path}: {checkpoints} holds no finished checkpoint (training has not saved one yet)")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise CheckpointError(f"{path}: no checkpoint for step {step}; there are {sorted(steps)}")
    model, abstract = stage.abstract_params(config, description.text_dim, description.control_dims)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    wanted = {"ema": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
                                     partial_restore=True)))
    manager.close()
    return Stage(path=workdir, step=int(step), config=config, description=description, model=model,
                 params=restored.state["ema"])
