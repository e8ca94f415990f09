"""The pixel policy every agent here shares (BC, sim-trained): a base-size frame and a task in, a chunk of control
deltas out — one chunk per segment, because the simulator takes a segment's controls (one per frame it makes) at once
and returns the frames after them, and the physics world is driven the same way so the two are comparable.

Network: the frame in [-1, 1] with two coordinate channels, three 3×3 convolutions at full resolution, a spatial
soft-argmax over 16 feature maps (16 learned keypoints: where the effector and each block are), the maps' mean
features, and the task's one-hot code → a 2-layer MLP → `chunk` × (dx, dy), tanh-bounded to ±`max_step` metres
(the scripted demonstrations' own bound). Behaviour cloning fits it by mean squared error (`fit`), each sample
weighted.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unisim.agents import saved
from unisim.agents.tasks import CODE_SIZE, Task
from unisim.samples.tabletop_spec import SCRIPTED_MAX_STEP

PARAMS_NAME, CONFIG_NAME = "policy.msgpack", "policy.json"


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    size: tuple[int, int] = (24, 40)  # the frames it sees: the simulator's base size
    chunk: int = 8  # control steps per decision: the simulator's frames per segment
    channels: int = 16
    keypoints: int = 16
    hidden: int = 256
    max_step: float = SCRIPTED_MAX_STEP  # metres per control step and axis


class PixelPolicy(nn.Module):
    config: PolicyConfig

    @nn.compact
    def __call__(self, frames: jax.Array, codes: jax.Array) -> jax.Array:
        c = self.config
        b, h, w, _ = frames.shape
        x = frames.astype(jnp.float32) / 127.5 - 1
        rows, cols = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
        x = jnp.concatenate([x, jnp.broadcast_to(jnp.stack([rows, cols], -1), (b, h, w, 2))], -1)
        for _ in range(2):
            x = nn.swish(nn.Conv(c.channels, (3, 3))(x))
        maps = nn.Conv(c.keypoints, (3, 3))(x)  # [B, h, w, K]
        attention = jax.nn.softmax(maps.reshape(b, h * w, c.keypoints), axis=1)
        keypoints = jnp.einsum("bpk,pc->bkc", attention, jnp.stack([rows.ravel(), cols.ravel()], -1))
        features = jnp.concatenate([keypoints.reshape(b, -1), x.mean((1, 2)), codes.astype(jnp.float32)], -1)
        for _ in range(2):
            features = nn.swish(nn.Dense(c.hidden)(features))
        out = nn.Dense(c.chunk * 2, kernel_init=nn.initializers.normal(1e-3))(features)
        return jnp.tanh(out.reshape(b, c.chunk, 2)) * c.max_step


@dataclasses.dataclass
class Policy:
    """A `PixelPolicy` with its parameters: `act` for the frames and tasks of a batch of episodes."""

    config: PolicyConfig
    params: dict

    @classmethod
    def create(cls, config: PolicyConfig = PolicyConfig(), seed: int = 0) -> "Policy":
        frames = jnp.zeros((1, *config.size, 3), jnp.uint8)
        return cls(config, PixelPolicy(config).init(jax.random.PRNGKey(seed), frames, jnp.zeros((1, CODE_SIZE))))

    def act(self, frames: np.ndarray, tasks: list[Task], rng: np.random.Generator | None = None,
            noise: float = 0.0) -> np.ndarray:
        """Chunks [B, chunk, 2] (metres) for frames [B, h, w, 3] uint8 at the policy's size; with `noise` > 0,
        exploration: one offset per chunk (std `noise`) plus half that per step, clipped to the action bound."""
        codes = np.stack([t.code() for t in tasks])
        chunks = np.asarray(_apply(self.config, self.params, jnp.asarray(frames), jnp.asarray(codes)), np.float64)
        if noise > 0:
            if rng is None:
                raise ValueError("exploration noise needs an rng")
            chunks = chunks + rng.normal(0, noise, (len(tasks), 1, 2)) + rng.normal(0, noise / 2, chunks.shape)
        return np.clip(chunks, -self.config.max_step, self.config.max_step)

    def save(self, directory: str) -> None:
        saved.save(directory, self.config, self.params, PARAMS_NAME, CONFIG_NAME)

    @classmethod
    def load(cls, directory: str) -> "Policy":
        template = lambda config: cls.create(config).params  # noqa: E731
        return cls(*saved.load(directory, PolicyConfig, template, PARAMS_NAME, CONFIG_NAME))


@functools.partial(jax.jit, static_argnums=0)
def _apply(config, params, frames, codes):
    return PixelPolicy(config).apply(params, frames, codes)


@dataclasses.dataclass
class Demos:
    """Imitation samples: frames [N, h, w, 3] uint8, task codes [N, CODE_SIZE], chunks [N, chunk, 2], weights [N]."""

    frames: np.ndarray
    codes: np.ndarray
    chunks: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def concatenate(cls, parts: list["Demos"]) -> "Demos":
        parts = [p for p in parts if len(p)]
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    @classmethod
    def of(cls, samples: list[tuple[np.ndarray, Task, np.ndarray]], weight: float = 1.0) -> "Demos":
        """From (frame, task, chunk) triples."""
        if not samples:
            raise ValueError("no samples")
        return cls(np.stack([s[0] for s in samples]), np.stack([s[1].code() for s in samples]),
                   np.stack([s[2] for s in samples]).astype(np.float32), np.full(len(samples), weight, np.float32))


def recorded_demos(clips: str, config: PolicyConfig = PolicyConfig(), limit: int = 100_000) -> Demos:
    """Behaviour-cloning samples from converted clips (a `unisim convert` output of recorded episodes): at every
    frame with `chunk` recorded controls after it, (that frame, the task its instruction names, those controls) —
    an episode's first frame included (a clip at an episode's start is read with one history frame). Clips whose
    text names no task are skipped."""
    from unisim.agents.tasks import task_of
    from unisim.simulator.evaluation.evaluate import held_out_clips

    samples = []
    for clip in held_out_clips(clips, config.size, 64, limit, min_targets=config.chunk, history=1):
        task = task_of(clip["text"])
        if task is None or clip["controls"] is None:
            continue
        frames = np.concatenate([clip["history"][-1:], clip["targets"]])
        for k in range(len(clip["targets"]) - config.chunk + 1):
            samples.append((frames[k], task, clip["controls"][k:k + config.chunk]))
    return Demos.of(samples)


def fit(policy: Policy, demos: Demos, steps: int, batch: int = 64, learning_rate: float = 1e-3, seed: int = 0,
        log=None) -> Policy:
    """Behaviour cloning: `steps` Adam steps of weighted mean squared error between the policy's chunk and the
    demonstrated one (in units of the action bound). Returns the fitted policy (the input is left as it was)."""
    config = policy.config
    optimizer, step = _fit_step(config, learning_rate)
    rng = np.random.default_rng(seed)
    params, state = policy.params, optimizer.init(policy.params)
    for i in range(steps):
        index = rng.integers(len(demos), size=min(batch, len(demos)))
        params, state, loss = step(params, state, demos.frames[index], demos.codes[index], demos.chunks[index],
                                   demos.weights[index])
        if log and (i + 1) % max(1, steps // 5) == 0:
            log(f"fit step {i + 1}/{steps}: loss {float(loss):.4f}")
    return Policy(config, params)


@functools.lru_cache(maxsize=None)
def _fit_step(config: PolicyConfig, learning_rate: float):
    """(optimizer, jitted step) for a policy shape and rate, made once: `improve` fits every round."""
    optimizer = optax.adam(learning_rate)
    scale = 1.0 / config.max_step

    def loss_fn(params, frames, codes, chunks, weights):
        predicted = PixelPolicy(config).apply(params, frames, codes)
        per_sample = jnp.mean(((predicted - chunks) * scale) ** 2, axis=(1, 2))
        return jnp.sum(per_sample * weights) / jnp.maximum(jnp.sum(weights), 1e-6)

    @jax.jit
    def step(params, state, frames, codes, chunks, weights):
        loss, grads = jax.value_and_grad(loss_fn)(params, frames, codes, chunks, weights)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return optimizer, step
