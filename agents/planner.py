"""The goal-conditioned planner (the paper's §4.1 at tabletop scale): the current frame and a goal frame in, the
next instruction out, one of the world's 16 pushes. Every variant (trained on recorded short-horizon episodes, or on
hindsight-labelled long-horizon rollouts of the learned simulator) is this one network; they differ in their data.

Network: one encoder reads each frame — the frame in [-1, 1] with two coordinate channels, three 3×3 convolutions,
a spatial soft-argmax over `keypoints` feature maps (learned keypoints: where things are) and each map's peak
(whether its thing is there); the current frame's keypoints, the goal's and their difference → a 2-layer MLP → 16
logits. What a plan needs is which block is where now and where it should be, and the keypoints say it in a few
numbers; a network reading whole frames learned the 600 recorded episodes by heart (held-out accuracy 0.04, chance
0.06). Fitted by cross-entropy (`fit`) on the samples and their mirror images: the board, camera and world are
symmetric about both image axes, so a frame flipped left-right is a true frame whose instruction has left and
right swapped (and up and down for a vertical flip).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unisim import fileio
from unisim.agents import saved
from unisim.agents.tasks import PUSHES, Task

PARAMS_NAME, CONFIG_NAME = "planner.msgpack", "planner.json"
_SWAP = {"left": "right", "right": "left", "up": "down", "down": "up"}
# Label maps of the two mirror images: PUSHES index → the index of the same push seen in the flipped frame.
FLIP_COLUMNS = np.array([PUSHES.index(Task("push", t.colour, _SWAP[t.direction]) if t.direction in ("left", "right")
                                      else t) for t in PUSHES], np.int32)
FLIP_ROWS = np.array([PUSHES.index(Task("push", t.colour, _SWAP[t.direction]) if t.direction in ("up", "down")
                                   else t) for t in PUSHES], np.int32)


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    size: tuple[int, int] = (24, 40)  # the frames it sees: the simulator's base size
    channels: int = 16
    keypoints: int = 16
    hidden: int = 256


class PlannerNet(nn.Module):
    config: PlannerConfig

    def setup(self):
        c = self.config
        self.convs = [nn.Conv(c.channels, (3, 3)), nn.Conv(c.channels, (3, 3)), nn.Conv(c.keypoints, (3, 3))]
        self.hidden = [nn.Dense(c.hidden), nn.Dense(c.hidden)]
        self.out = nn.Dense(len(PUSHES))

    def encode(self, frames: jax.Array) -> jax.Array:
        """[B, h, w, 3] uint8 → [B, keypoints × 3]: each map's expected (row, col) and its peak logit."""
        b, h, w, _ = frames.shape
        x = frames.astype(jnp.float32) / 127.5 - 1
        rows, cols = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
        x = jnp.concatenate([x, jnp.broadcast_to(jnp.stack([rows, cols], -1), (b, h, w, 2))], -1)
        x = nn.swish(self.convs[1](nn.swish(self.convs[0](x))))
        maps = self.convs[2](x).reshape(b, h * w, -1)  # [B, pixels, K]
        attention = jax.nn.softmax(maps, axis=1)
        where = jnp.einsum("bpk,pc->bkc", attention, jnp.stack([rows.ravel(), cols.ravel()], -1))
        return jnp.concatenate([where.reshape(b, -1), maps.max(axis=1)], -1)

    def __call__(self, frames: jax.Array, goals: jax.Array) -> jax.Array:
        now, goal = self.encode(frames), self.encode(goals)
        x = jnp.concatenate([now, goal, goal - now], -1)
        for layer in self.hidden:
            x = nn.swish(layer(x))
        return self.out(x)


@dataclasses.dataclass
class Planner:
    """A `PlannerNet` with its parameters: `choose` the next instruction for a batch of (frame, goal) pairs."""

    config: PlannerConfig
    params: dict

    @classmethod
    def create(cls, config: PlannerConfig = PlannerConfig(), seed: int = 0) -> "Planner":
        frames = jnp.zeros((1, *config.size, 3), jnp.uint8)
        return cls(config, PlannerNet(config).init(jax.random.PRNGKey(seed), frames, frames))

    def probabilities(self, frames: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """[B, 16] over `PUSHES` for frames and goals [B, h, w, 3] uint8 at the planner's size."""
        return np.asarray(jax.nn.softmax(_apply(self.config, self.params, jnp.asarray(frames), jnp.asarray(goals))))

    def choose(self, frames: np.ndarray, goals: np.ndarray) -> list[Task]:
        return [PUSHES[i] for i in self.probabilities(frames, goals).argmax(-1)]

    def save(self, directory: str) -> None:
        saved.save(directory, self.config, self.params, PARAMS_NAME, CONFIG_NAME)

    @classmethod
    def load(cls, directory: str) -> "Planner":
        template = lambda config: cls.create(config).params  # noqa: E731
        return cls(*saved.load(directory, PlannerConfig, template, PARAMS_NAME, CONFIG_NAME))


@functools.partial(jax.jit, static_argnums=0)
def _apply(config, params, frames, goals):
    return PlannerNet(config).apply(params, frames, goals)


@dataclasses.dataclass
class PlanSamples:
    """(frame, goal, instruction) samples: frames and goals [N, h, w, 3] uint8, labels [N] (indices into PUSHES)."""

    frames: np.ndarray
    goals: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, samples: list[tuple[np.ndarray, np.ndarray, Task]]) -> "PlanSamples":
        if not samples:
            raise ValueError("no planner samples")
        return cls(np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]),
                   np.array([PUSHES.index(s[2]) for s in samples], np.int32))

    def save(self, path: str) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, frames=self.frames, goals=self.goals, labels=self.labels)
        fileio.publish(buffer.getvalue(), path)

    @classmethod
    def load(cls, path: str) -> "PlanSamples":
        import io

        with np.load(io.BytesIO(fileio.read_bytes(path))) as f:
            return cls(f["frames"], f["goals"], f["labels"])


def recorded_samples(episodes) -> PlanSamples:
    """The short-horizon planner's data: each recorded episode's first frame, its last frame as the goal and its
    instruction (`agents.hindsight.recorded_episodes`); episodes whose text names no push are left out."""
    from unisim.agents.tasks import task_of

    samples = [(e.first, e.last, task_of(e.text)) for e in episodes]
    return PlanSamples.of([s for s in samples if s[2] is not None and s[2].family == "push"])


def fit(planner: Planner, samples: PlanSamples, steps: int, batch: int = 64, learning_rate: float = 1e-3,
        seed: int = 0, log=None) -> Planner:
    """`steps` Adam steps of cross-entropy on random batches, each batch mirrored one of four ways (module
    docstring); returns the fitted planner (the input is unchanged)."""
    optimizer, step = _fit_step(planner.config, learning_rate)
    rng = np.random.default_rng(seed)
    params, state = planner.params, optimizer.init(planner.params)
    for i in range(steps):
        index = rng.integers(len(samples), size=min(batch, len(samples)))
        frames, goals, labels = samples.frames[index], samples.goals[index], samples.labels[index]
        flip = rng.integers(4)  # none, columns, rows, both: each sample's mirror images are as true as it
        if flip & 1:
            frames, goals, labels = frames[:, :, ::-1], goals[:, :, ::-1], FLIP_COLUMNS[labels]
        if flip & 2:
            frames, goals, labels = frames[:, ::-1], goals[:, ::-1], FLIP_ROWS[labels]
        params, state, loss = step(params, state, np.ascontiguousarray(frames), np.ascontiguousarray(goals), labels)
        if log and (i + 1) % max(1, steps // 5) == 0:
            log(f"fit step {i + 1}/{steps}: cross-entropy {float(loss):.3f}")
    return Planner(planner.config, params)


def accuracy(planner: Planner, samples: PlanSamples, batch: int = 256) -> float:
    """How often the planner chooses a sample's label."""
    hits = 0
    for b in range(0, len(samples), batch):
        probabilities = planner.probabilities(samples.frames[b:b + batch], samples.goals[b:b + batch])
        hits += int((probabilities.argmax(-1) == samples.labels[b:b + batch]).sum())
    return hits / max(len(samples), 1)


@functools.lru_cache(maxsize=None)
def _fit_step(config: PlannerConfig, learning_rate: float):
    """(optimizer, jitted step) for a planner shape and rate, made once per process."""
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, frames, goals, labels):
        logits = PlannerNet(config).apply(params, frames, goals)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, state, frames, goals, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, frames, goals, labels)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return optimizer, step
