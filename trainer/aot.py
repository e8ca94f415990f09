"""Compile the real train step for an accelerator this machine does not have, before paying for one.

    unisim train --config trainer/configs/base.py --compile_only --topology v5e-256 --config.bf16=True

The step compiled is training's own (`train.jit_training`: the config's model, optimizer, mesh, shardings and
donation) over the input's real shapes (`data.empty_batch` at the global batch), lowered for every device of the
target and compiled by XLA for that chip, as MaxText's `train_compile.py` does. For a TPU this needs the `libtpu`
package (`pip install -e .[tpu]` or `make install-tpu`, docs/accelerators.md) and no TPU: libtpu describes the
topology (`jax.experimental.topologies`) and compiles for it on this CPU. `cpu-N` targets compile for N of this
machine's devices (tests; `XLA_FLAGS=--xla_force_host_platform_device_count=N`).

What it reports, per device (XLA's own analysis of the compiled program): the memory of the arguments (parameters,
optimizer state, EMA, the batch), of the outputs and of the temporaries (activations), whether their sum fits the
chip's HBM; the FLOPs of one step; and, at an assumed fraction of the chip's peak (`--utilization`, stated in the
output), the projected step time and the MFU that time means (model FLOPs: the step lowered without
rematerialisation, whose recomputation is not useful work).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from unisim.schemas.errors import UserError
from unisim.trainer import data, train

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Target:
    """An accelerator slice as its users name it, and what the projection needs to know of its chips."""

    name: str  # e.g. "v5e-256": Cloud TPU's name (v4/v5p count TensorCores, v5e/v6e count chips)
    platform: str  # "tpu" or "cpu"
    topology: str  # libtpu's topology name, e.g. "v5e:16x16"
    chip_config: str  # "default" (a JAX device per TensorCore) or "megacore" (a device per chip)
    peak_flops: float  # dense bf16 FLOP/s of one JAX device
    hbm_bytes: int  # memory of one JAX device
    chips: int
    devices: int  # JAX devices: chips × devices per chip


# Peak bf16 FLOP/s and HBM per chip from Cloud TPU's system-architecture pages; a v3 chip's two TensorCores are two
# JAX devices (half of each figure), v4 and v5p chips are one (megacore). Topologies as MaxText's
# accelerator_to_spec_map names them.
_TPU_CHIPS = {  # generation: (peak bf16 FLOP/s per chip, HBM bytes per chip, JAX devices per chip)
    "v3": (123e12, 32 * GiB, 2),
    "v4": (275e12, 32 * GiB, 1),
    "v5e": (197e12, 16 * GiB, 1),
    "v5p": (459e12, 95 * GiB, 1),
    "v6e": (918e12, 32 * GiB, 1),
}
_TPU_SLICES = {  # name: (libtpu topology, chip config, chips)
    "v3-32": ("v3:4x4", "default", 16),
    "v3-512": ("v3:16x16", "default", 256),
    "v3-1024": ("v3:16x32", "default", 512),  # Table 6: "512 TPU-v3 chips"
    "v4-8": ("v4:2x2x1", "megacore", 4),
    "v4-128": ("v4:4x4x4", "megacore", 64),
    "v4-512": ("v4:4x8x8", "megacore", 256),
    "v5e-16": ("v5e:4x4", "default", 16),
    "v5e-64": ("v5e:8x8", "default", 64),
    "v5e-256": ("v5e:16x16", "default", 256),
    "v5p-8": ("v5:2x2x1", "megacore", 4),
    "v5p-128": ("v5:4x4x4", "megacore", 64),
    "v5p-512": ("v5:4x8x8", "megacore", 256),
    "v6e-16": ("v6e:4x4", "default", 16),
    "v6e-256": ("v6e:16x16", "default", 256),
}


def _tpu_target(name: str) -> Target:
    topology, chip_config, chips = _TPU_SLICES[name]
    peak, hbm, per_chip = _TPU_CHIPS[name.split("-")[0]]
    return Target(name, "tpu", topology, chip_config, peak / per_chip, hbm // per_chip, chips, chips * per_chip)


TARGETS = {name: _tpu_target(name) for name in _TPU_SLICES}


class TargetError(UserError):
    """An unknown target name, or a target this installation cannot compile for; says what to do."""


def target(name: str, peak_tflops: float | None = None, hbm_gib: float | None = None) -> Target:
    """The target called `name`: a TPU slice of `TARGETS`, or `cpu-N` (N of this machine's CPU devices, whose peak
    and memory are unknown unless given)."""
    if name.startswith("cpu-") and name[4:].isdigit():
        found = Target(name, "cpu", "", "", 0.0, 0, int(name[4:]), int(name[4:]))
    elif name in TARGETS:
        found = TARGETS[name]
    else:
        raise TargetError(f"unknown --topology {name!r}; known: {', '.join(TARGETS)} and cpu-N")
    if peak_tflops:
        found = dataclasses.replace(found, peak_flops=peak_tflops * 1e12)
    if hbm_gib:
        found = dataclasses.replace(found, hbm_bytes=int(hbm_gib * GiB))
    return found


def devices_of(t: Target) -> list:
    """The target's JAX devices: libtpu's description of the topology (no TPU needed), or CPU devices."""
    if t.platform == "cpu":
        devices = jax.devices("cpu")
        if len(devices) < t.devices:
            raise TargetError(f"{t.name}: this process has {len(devices)} CPU devices; run it with "
                              f"XLA_FLAGS=--xla_force_host_platform_device_count={t.devices}")
        return devices[:t.devices]
    from jax.experimental import topologies

    try:
        description = topologies.get_topology_desc(topology_name=t.topology, platform="tpu",
                                                   chip_config_name=t.chip_config, chips_per_host_bounds=(2, 2, 1),
                                                   num_slices=1)
    except (RuntimeError, ValueError) as error:  # RuntimeError "JAX TPU support not installed" without libtpu
        raise TargetError(f"cannot describe {t.name} ({t.topology}): {error}. Compiling for a TPU needs the libtpu "
                          "package on this machine (no TPU): pip install -e .[tpu] (docs/accelerators.md)") from error
    return list(description.devices)


@dataclasses.dataclass
class Report:
    """What compiling one train step for a target found (per device unless named otherwise)."""

    target: str
    devices: int
    mesh: dict  # {"data": …, "fsdp": …}
    batch: int  # the global batch
    parameters: int
    argument_bytes: int  # parameters, optimizer state, EMA and batch shards held by one device
    output_bytes: int
    alias_bytes: int  # outputs that reuse donated arguments' buffers
    temp_bytes: int  # activations and other temporaries
    hbm_bytes: int  # the device's memory (0: unknown)
    flops: float  # one step, one device, as compiled (rematerialisation included)
    model_flops: float  # one step, all devices, without rematerialisation
    utilization: float  # the assumed fraction of peak the step time is projected at
    peak_flops: float  # of one device (0: unknown)
    compile_seconds: float
    remat: bool

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def fits(self) -> bool | None:
        return None if not self.hbm_bytes else self.peak_bytes <= self.hbm_bytes

    @property
    def step_seconds(self) -> float | None:
        return self.flops / (self.peak_flops * self.utilization) if self.peak_flops else None

    @property
    def mfu(self) -> float | None:
        seconds = self.step_seconds
        return self.model_flops / (self.devices * self.peak_flops * seconds) if seconds else None

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes, "fits": self.fits,
                "step_seconds": self.step_seconds, "mfu": self.mfu}


def _abstract_inputs(config, mesh, abstract_state, state_sharding, text_dim: int, control_dims: int):
    """(state, batch, rng) as shapes with the shardings training gives them."""
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                         state_sharding)
    one = data.empty_batch(data.InputConfig(**config.input.to_dict()), 1, text_dim, control_dims)
    one.pop("source")  # counted by the loop, never sent to the step
    spread = NamedSharding(mesh, P(("data", "fsdp")))
    batch = {k: jax.ShapeDtypeStruct((config.input.batch_size, *v.shape[1:]), v.dtype, sharding=spread)
             for k, v in one.items()}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, P()))
    return state, batch, rng


def compile_step(config, t: Target, text_dim: int, control_dims: int, utilization: float = 0.4) -> Report:
    """Lowers and compiles `config`'s train step for target `t`. Raises TargetError where the global batch does not
    split over the target's devices (before anything is compiled), and make_mesh's ValueError where the FSDP group
    does not divide them."""
    batch = config.input.batch_size
    if batch % t.devices:
        raise TargetError(f"the global batch {batch} does not split over the {t.devices} devices of {t.name} "
                          "(the trainer splits the batch over every device): use a batch that is a multiple of "
                          f"{t.devices} (--config.input.batch_size) or a smaller slice")
    devices = devices_of(t)
    if len(devices) != t.devices:
        raise TargetError(f"{t.name}: libtpu describes {len(devices)} devices, not {t.devices}")
    mesh = train.make_mesh(config.fsdp, devices)
    _, _, abstract, state_sharding, step_fn = train.jit_training(config, mesh, text_dim, control_dims)
    began = time.monotonic()
    compiled = step_fn.lower(*_abstract_inputs(config, mesh, abstract, state_sharding, text_dim,
                                               control_dims)).compile()
    seconds = time.monotonic() - began
    memory = compiled.memory_analysis()
    flops = _flops(compiled.cost_analysis())
    remat = bool(config.model.get("remat", False))
    if remat:  # the useful work: the same step without recomputation, lowered only (a lowered program's cost is
        # the whole step's, on global shapes; a compiled one's is one device's)
        plain = config.copy_and_resolve_references()
        plain.model.remat = False
        _, _, abstract_plain, sharding_plain, step_plain = train.jit_training(plain, mesh, text_dim, control_dims)
        model_flops = _flops(step_plain.lower(*_abstract_inputs(plain, mesh, abstract_plain, sharding_plain,
                                                                text_dim, control_dims)).cost_analysis())
    else:
        model_flops = flops * len(devices)
    parameters = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
    return Report(target=t.name, devices=len(devices), mesh=dict(mesh.shape), batch=batch, parameters=parameters,
                  argument_bytes=int(memory.argument_size_in_bytes), output_bytes=int(memory.output_size_in_bytes),
                  alias_bytes=int(memory.alias_size_in_bytes), temp_bytes=int(memory.temp_size_in_bytes),
                  hbm_bytes=t.hbm_bytes, flops=flops, model_flops=model_flops, utilization=utilization,
                  peak_flops=t.peak_flops, compile_seconds=seconds, remat=remat)


def _flops(cost) -> float:
    """FLOPs from a cost analysis (a dict, or a list of one dict per program in older jax)."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def _duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def format_report(r: Report) -> str:
    gib = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
    fits = {None: "unknown (no HBM size for this target)", True: "yes", False: "NO"}[r.fits]
    lines = [
        f"[compile] {r.target}: {r.devices} devices, mesh data×fsdp = {r.mesh['data']}×{r.mesh['fsdp']}, global "
        f"batch {r.batch}, {r.parameters / 1e6:,.1f} M parameters, remat {'on' if r.remat else 'off'}; compiled in "
        f"{r.compile_seconds:.0f} s",
        f"[compile] memory per device: arguments {gib(r.argument_bytes)}, outputs {gib(r.output_bytes)} "
        f"({gib(r.alias_bytes)} of them in donated buffers), temporaries {gib(r.temp_bytes)}; peak "
        f"{gib(r.peak_bytes)} of {gib(r.hbm_bytes) if r.hbm_bytes else '?'}: fits {fits}",
        f"[compile] FLOPs per step: {r.flops:.3e} per device as compiled, {r.model_flops:.3e} model FLOPs in all"]
    if r.step_seconds:
        lines.append(f"[compile] projected at {r.utilization:.0%} of the peak {r.peak_flops / 1e12:.1f} TFLOP/s per "
                     f"device: {_duration(r.step_seconds)} a step, MFU {r.mfu:.1%}")
    else:
        lines.append("[compile] no projected step time: this target's peak FLOP/s is unknown (--peak_tflops)")
    return "\n".join(lines)
