"""The training loop of a model stage — one readable main in sections, big_vision style (`unisim train` calls it).

    unisim train --config trainer/configs/tiny.py --workdir /tmp/run [--mixture SPEC] [--steps N] [--config.k=v]

Sections: devices and mesh → input → model and state → checkpoint restore → the loop (step, log, sample, save).
The train step is one `jax.jit` with explicit shardings — the batch split over every device, parameters and
optimizer state sharded over the `fsdp` axis (`config.fsdp` devices) and replicated over `data` — and the state
donated. Checkpoints (orbax) hold the parameters, optimizer state, EMA, step and every process's data-iterator
state, so a killed run restarts on the same data order and the same loss curve — and the chain of process counts
the run has had (`trainer/streams.py`), so that a run resumed on another number of hosts reads the rest of its
epoch in progress once before new epochs. Metrics go to TensorBoard
(`workdir/tensorboard`, via tensorboardX: no TensorFlow) and to `workdir/metrics.jsonl`.

Multi-host: pass `--coordinator_address HOST:PORT --num_processes N --process_id I` (or let `jax.distributed`
find them on a TPU pod / SLURM); each process reads its own interleaved share of every source.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from unisim import fileio
from unisim.schemas.errors import UserError
from unisim.schemas.run import RUN_DESCRIPTION_NAME, RunDescription, SourceDescription
from unisim.trainer import data, diffusion, stage, streams


class DivergedError(UserError, FloatingPointError):
    """The loss or the gradient stopped being finite: the message names the last checkpoint and what to change."""


# ------------------------------------------------------------------------------------------------ state


@functools.partial(jax.tree_util.register_dataclass, data_fields=["step", "params", "ema", "opt_state"],
                   meta_fields=[])
@dataclasses.dataclass
class TrainState:
    step: jax.Array
    params: dict
    ema: dict
    opt_state: tuple


def fsdp_spec(shape: tuple[int, ...], fsdp: int):
    """Shard a parameter's largest axis that `fsdp` divides over the `fsdp` mesh axis; replicate small ones."""
    if fsdp == 1 or int(np.prod(shape)) < 2**14:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp == 0:
            return P(*[("fsdp" if a == axis else None) for a in range(len(shape))])
    return P()


def make_optimizer(opt):
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, opt.learning_rate, max(1, opt.warmup_steps)),
         optax.constant_schedule(opt.learning_rate)],
        [max(1, opt.warmup_steps)])
    return optax.chain(optax.clip_by_global_norm(opt.clip_norm), optax.scale_by_adam(b1=opt.b1, b2=opt.b2),
                       optax.scale_by_learning_rate(schedule)), schedule


# ------------------------------------------------------------------------------------------------- step


def train_step(state: TrainState, batch, rng, *, model, optimizer, schedule, config):
    """One optimisation step; skips the update (and reports it) when the loss or gradient is not finite."""
    rng = jax.random.fold_in(rng, state.step)
    time_key, noise_key, dropout_key, condition_key = jax.random.split(rng, 4)
    b = batch["frames"].shape[0]
    cond = stage.conditioning(config, batch, batch["drop_condition"], jax.random.split(condition_key, b))
    # A residual stage diffuses the difference from the last history frame (stage.anchor; 0 otherwise).
    x = stage.to_unit(batch["frames"]) - stage.anchor(config, batch["history"], batch["history_mask"], cond)
    logsnr = diffusion.cosine_logsnr(jax.random.uniform(time_key, (b,)))
    noise = jax.random.normal(noise_key, x.shape)

    target = diffusion.training_target(x, noise, logsnr, diffusion.prediction_of(config))

    def loss_fn(params):
        output = model.apply(params, diffusion.add_noise(x, noise, logsnr), logsnr, cond, deterministic=False,
                             rngs={"dropout": dropout_key})
        return diffusion.masked_mse(output, target, batch["frame_mask"])

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # EMA of the parameters themselves (optax.ema would average the updates), warmed up so early steps count.
    decay = jnp.minimum(config.optimizer.ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = TrainState(step=state.step + 1, params=keep(params, state.params), ema=keep(ema, state.ema),
                           opt_state=keep(opt_state, state.opt_state))
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step), "finite": finite}
    return new_state, metrics


# ------------------------------------------------------------------------------------------------ build


def abstract_state(config, text_dim: int, control_dims: int):
    """(model, state initialiser, the state's shapes and dtypes) — nothing allocated."""
    model = stage.build_model(config)
    optimizer, _ = make_optimizer(config.optimizer)

    def init(rng):
        params = stage.init_params(model, config, text_dim, control_dims, rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema=params, opt_state=optimizer.init(params))

    return model, init, jax.eval_shape(init, jax.random.PRNGKey(config.seed))


def jit_training(config, mesh, text_dim: int, control_dims: int):
    """(model, state initialiser, abstract state, state shardings, jitted step) on `mesh`, nothing allocated: the
    step takes (state, batch, rng) with the batch split over every device, and donates the state. Training
    (`build_training`) and compiling for a target without it (`trainer/aot.py`) share it, so what is compiled there
    is the step that runs here."""
    model, init, abstract = abstract_state(config, text_dim, control_dims)
    optimizer, schedule = make_optimizer(config.optimizer)
    state_sharding = jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, config.fsdp)), abstract)
    step_fn = jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, schedule=schedule,
                                        config=config),
                      in_shardings=(state_sharding, NamedSharding(mesh, P(("data", "fsdp"))), NamedSharding(mesh, P())),
                      out_shardings=(state_sharding, NamedSharding(mesh, P())), donate_argnums=(0,))
    return model, init, abstract, state_sharding, step_fn


def build_training(config, mesh, text_dim: int, control_dims: int):
    """(model, state, abstract state, state shardings, jitted step): `jit_training` with the state created
    directly in its shardings."""
    model, init, abstract, state_sharding, step_fn = jit_training(config, mesh, text_dim, control_dims)
    state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
    return model, state, abstract, state_sharding, step_fn


def make_mesh(fsdp: int, devices=None):
    """The (data, fsdp) mesh over `devices` (default: every device of this run; `trainer/aot.py` passes a target
    topology's)."""
    devices = np.array(jax.devices() if devices is None else devices)
    if len(devices) % fsdp:
        raise ValueError(f"config.fsdp={fsdp} does not divide the {len(devices)} devices")
    return Mesh(devices.reshape(-1, fsdp), ("data", "fsdp"))


# ------------------------------------------------------------------------------------------------- main


def train(config, workdir: str, mixture: str | None = None, steps: int | None = None) -> list[dict]:
    """Runs (or resumes) training in `workdir`; returns the metrics rows this call logged."""
    import grain
    import orbax.checkpoint as ocp

    steps = steps if steps is not None else config.steps
    process, processes = jax.process_index(), jax.process_count()
    os.makedirs(workdir, exist_ok=True)

    # ---- devices and mesh: the batch over all devices, parameters over `fsdp` of them.
    mesh = make_mesh(config.fsdp)
    devices = mesh.devices.reshape(-1)
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    print(f"[train] process {process} of {processes}; mesh data×fsdp = {mesh.shape['data']}×{mesh.shape['fsdp']} "
          f"over {len(devices)} {devices[0].platform} devices", file=sys.stderr)
    if config.input.batch_size % len(devices):
        raise ValueError(f"batch size {config.input.batch_size} is not a multiple of the {len(devices)} devices")

    # ---- checkpoints: the latest one's chain of process counts decides what this run reads first.
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True),
        item_names=("state", "data", "layouts"))
    latest = manager.latest_step()
    sources = data.parse_mixture(mixture or config.mixture)
    layouts = _layouts(manager, latest, processes, sources)

    # ---- input: this process's share of the global batch.
    input_config = data.InputConfig(**{**config.input.to_dict(), "batch_size": config.input.batch_size // processes})
    train_input = data.build_input(sources, input_config, process, processes,
                                   log=lambda line: print(line, file=sys.stderr), layouts=layouts)
    iterator = iter(train_input.dataset)
    names = train_input.names()

    # ---- model and state, created directly in their shardings.
    model, state, abstract, state_sharding, step_fn = build_training(config, mesh, train_input.text_dim,
                                                                     train_input.control_dims)

    if process == 0:
        write_run_description(workdir, config, train_input)

    # ---- restore the latest checkpoint: the state, and the data position unless the process count changed there
    # (then the input above starts on the carried-over records).
    if latest is not None:
        items = {"state": ocp.args.StandardRestore(jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding))}
        if layouts[-1].start_step < latest:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        state = manager.restore(latest, args=ocp.args.Composite(**items)).state
        print(f"[train] resumed from step {latest} in {workdir}"
              + (f" on {processes} processes, saved by {layouts[-2].processes}: the input reads what they had not "
                 "read of their epochs first" if layouts[-1].start_step == latest and len(layouts) > 1 else ""),
              file=sys.stderr)
    first_step = int(state.step)

    # ---- the loop.
    writer = _Writer(workdir) if process == 0 else None
    if processes > 1 and config.sample_every:
        print("[train] sample videos are written by single-process runs only (not yet gathered across hosts)",
              file=sys.stderr)
    rng = jax.random.PRNGKey(config.seed + 1)
    source_counts = np.zeros(len(names), np.int64)
    rows, window = [], []
    loop_start = window_start = time.monotonic()
    budget = config.get("max_train_seconds", 0.0)
    deadline = loop_start + budget if budget > 0 else None
    for step in range(first_step, steps):
        local = next(iterator)
        source_counts += np.bincount(local.pop("source"), minlength=len(names))
        batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
        state, metrics = step_fn(state, batch, rng)
        window.append(metrics)
        done = step + 1
        # The wall-clock budget ends the run at this step: logged and checkpointed like the last step. Processes
        # agree on it through process 0's clock, so that all of them stop at the same step.
        out_of_time = deadline is not None and _agree(time.monotonic() >= deadline)
        last = done == steps or out_of_time
        if done % config.log_every == 0 or last:
            # Checked at log steps, not every step, so the host never waits on the device in between; a non-finite
            # step's update was already skipped on the device.
            first = done - len(window) + 1  # the window holds steps first … done
            bad, m = next(((first + i, m) for i, m in enumerate(window) if not bool(m["finite"])), (None, None))
            if bad is not None:
                raise DivergedError(
                    f"step {bad}: the loss or the gradient is not finite (loss {float(m['loss'])}, gradient norm "
                    f"{float(m['grad_norm'])}); the update was skipped and training stops. The last checkpoint is "
                    f"step {manager.latest_step()}: lower the learning rate (--config.optimizer.learning_rate) or "
                    "check the data, then resume.")
            elapsed = time.monotonic() - window_start
            row = {"step": done, **{k: float(np.mean([float(m[k]) for m in window])) for k in ("loss", "grad_norm")},
                   "learning_rate": float(window[-1]["learning_rate"]),
                   "examples_per_second": len(window) * config.input.batch_size / max(elapsed, 1e-9),
                   "elapsed_seconds": time.monotonic() - loop_start}  # this call's training time so far
            realized = data.realized_proportions(source_counts)
            row["mixture"] = {n: {"realized": float(r), "target": float(t)}
                              for n, r, t in zip(names, realized, train_input.weights)}
            rows.append(row)
            if writer:
                writer.scalars(row)
            window, window_start = [], time.monotonic()
        if writer and processes == 1 and config.sample_every and done % config.sample_every == 0:
            writer.samples(done, _sample(model, state.ema, local, config, jax.random.PRNGKey(done)))
        if done % config.checkpoint_every == 0 or last:
            manager.save(done, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
                layouts=ocp.args.JsonSave(_layouts_json(layouts, sources, train_input.manifests))))
        if out_of_time:
            print(f"[train] stopped at step {done}: the wall-clock budget of {config.max_train_seconds:.0f} s is "
                  "spent (config.max_train_seconds)", file=sys.stderr)
            break
    manager.wait_until_finished()
    manager.close()
    if writer:
        writer.close()
    return rows


def _layouts_json(layouts, sources, manifests) -> dict:
    return {"layouts": [dataclasses.asdict(layout) for layout in layouts],
            "sources": [{"path": s.path, "weight": s.weight, "records": m.records} for s, m in zip(sources, manifests)]}


def _layouts(manager, latest: int | None, processes: int, sources) -> tuple[streams.Layout, ...]:
    """The run's chain of process counts (`trainer/streams.py`), this run's last: read from the latest checkpoint
    (older checkpoints hold none: their count is in the data item's file names), a layout added when the count
    changes. A change refuses a changed mixture: the carry-over is computed over the sources that were read."""
    import orbax.checkpoint as ocp

    if latest is None:
        return (streams.Layout(processes, 0),)
    folder = os.path.join(manager.directory, str(latest))
    if os.path.isdir(os.path.join(folder, "layouts")):
        saved = manager.restore(latest, args=ocp.args.Composite(layouts=ocp.args.JsonRestore())).layouts
        layouts = tuple(streams.Layout(**layout) for layout in saved["layouts"])
    else:
        names = os.listdir(os.path.join(folder, "data"))
        count = next(int(n.rsplit("-of-", 1)[1].split(".")[0]) for n in names if "-of-" in n)
        layouts, saved = (streams.Layout(count, 0),), None
    if layouts[-1].processes == processes:
        return layouts
    now = [{"path": s.path, "weight": s.weight} for s in sources]
    if saved and [{"path": s["path"], "weight": s["weight"]} for s in saved["sources"]] != now:
        raise streams.LayoutError(
            f"the checkpoint at step {latest} was saved by {layouts[-1].processes} processes reading another mixture "
            f"({', '.join(s['path'] for s in saved['sources'])}): change the process count or the mixture, not both "
            "at once (resume on the old count first, or start a new workdir)")
    return layouts + (streams.Layout(processes, latest),)


def _agree(flag: bool) -> bool:
    """Process 0's `flag`, on every process (a collective: every process must call it at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def write_run_description(workdir: str, config, train_input: data.TrainInput) -> None:
    """`workdir/run.json` (`schemas.run.RunDescription`): what the simulator needs besides the parameters."""
    description = RunDescription(
        config=json.loads(config.to_json_best_effort()), text_dim=train_input.text_dim,
        control_dims=train_input.control_dims, text_encoder=train_input.manifests[0].text_encoder,
        sources=tuple(SourceDescription(name=name, dataset=m.dataset, path=s.path, weight=float(w),
                                        control_stats=m.control_stats, frame_size=(m.frame_height, m.frame_width),
                                        fps=m.fps)
                      for name, s, m, w in zip(train_input.names(), train_input.sources, train_input.manifests,
                                               train_input.weights)))
    fileio.publish(description.dumps().encode("utf-8"), fileio.join(workdir, RUN_DESCRIPTION_NAME))


def _sample(model, ema_params, local_batch, config, rng):
    """A few videos from the EMA parameters, conditioned like the batch's first examples."""
    n = min(2, local_batch["frames"].shape[0])
    batch = {k: jnp.asarray(v[:n]) for k, v in local_batch.items()}
    cond_key, noise_key = jax.random.split(rng)
    cond = stage.conditioning(config, batch, jnp.zeros((n,), bool), jax.random.split(cond_key, n))
    denoise = lambda z, logsnr: model.apply(ema_params, z, logsnr, cond)  # noqa: E731
    x = jax.jit(functools.partial(diffusion.ddim_sample, denoise, steps=config.sample_steps,
                                  prediction=diffusion.prediction_of(config), bound=stage.sample_bound(config)))(
        jax.random.normal(noise_key, batch["frames"].shape))
    return stage.to_uint8(stage.finish_sample(config, x, batch["history"], batch["history_mask"], cond))


class _Writer:
    """TensorBoard event files (tensorboardX) and metrics.jsonl; sample videos as frame strips and GIFs."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._workdir = workdir
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

    def scalars(self, row: dict) -> None:
        step = row["step"]
        for key in ("loss", "grad_norm", "learning_rate", "examples_per_second"):
            self._tb.add_scalar(f"train/{key}", row[key], step)
        for name, share in row["mixture"].items():
            self._tb.add_scalar(f"mixture/{name}/realized", share["realized"], step)
            self._tb.add_scalar(f"mixture/{name}/target", share["target"], step)
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        print(f"[train] step {step}: loss {row['loss']:.4f}, grad norm {row['grad_norm']:.3f}, "
              f"{row['examples_per_second']:.1f} examples/s", file=sys.stderr)

    def samples(self, step: int, videos: np.ndarray) -> None:
        from PIL import Image

        folder = os.path.join(self._workdir, "samples")
        os.makedirs(folder, exist_ok=True)
        for i, video in enumerate(videos):  # [T, H, W, 3]
            self._tb.add_image(f"samples/{i}", np.concatenate(list(video), axis=1), step, dataformats="HWC")
            frames = [Image.fromarray(f).resize((f.shape[1] * 4, f.shape[0] * 4), Image.NEAREST) for f in video]
            frames[0].save(os.path.join(folder, f"step{step:08d}_{i}.gif"), save_all=True, append_images=frames[1:],
                           duration=125, loop=0)

    def close(self) -> None:
        self._tb.close()
        self._jsonl.close()
