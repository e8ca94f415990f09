"""The simulator as a reinforcement-learning environment (paper §2.2, §4.2, §11.2): dm_env and gymnasium.

Each step is one interaction: the action (text, a control vector, or both) conditions the next segment of
`frames` (16) frames, which becomes the observation. Both classes run over any backend with the multi-session
interface of `Simulator` — the local one, or `RemoteSimulator(url)` for a server that batches the steps of many
environments (and of many actor processes) into one sampling call:

    from unisim.simulator.core import Simulator, SamplerSettings
    from unisim.simulator.envs import SimulatorEnv, SimulatorGymEnv

    sim = Simulator.from_checkpoints("runs/base", sampler=SamplerSettings(steps=16))
    env = SimulatorEnv(sim, initial_images, max_steps=20, seed=0)          # dm_env
    timestep = env.reset()
    timestep = env.step({"text": "push the red block left", "controls": np.zeros(2, np.float32)})

    env = SimulatorGymEnv(sim, initial_images, max_steps=20, render_mode="rgb_array")   # gymnasium
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step({"text": "", "controls": np.array([0.01, -0.02])})
    info["frames"]                           # the whole generated segment [frames, H, W, 3]

    from unisim.simulator.serving.client import RemoteSimulator
    env = SimulatorGymEnv(RemoteSimulator("http://host:8000"), initial_images, max_steps=20)

Observation: the last `observation_frames` output frames as uint8, [H, W, 3] for 1 (the default), else
[k, H, W, 3] (a plain array, not a dict, so that image-based agents take it as it is). At a reset the stack is
filled with the initial frame. dm_env: `BoundedArray(shape, uint8, 0, 255)`; gymnasium: `Box(0, 255, shape, uint8)`.

Action: a dict {"text": str, "controls": float32 [D]}, "text" only if the model takes text, "controls" only if it
was trained on a source with controls (pick one with `control_source` when there are several). An empty text means
no text; either key may also be left out or None (a text-only action on a model with both). Controls are in the
source's own units, bounded by its training statistics (values outside are clipped to them by the tokenizer); with
`normalize_controls=True` they are in [-1, 1] instead, mapped linearly onto those bounds (what most RL libraries
expect). dm_env: {"text": StringArray(()), "controls": BoundedArray((D,), float32, low, high)}; gymnasium:
Dict({"text": Text(max_length, charset), "controls": Box(low, high, (D,), float32)}). Text outside the Text space's
charset is still accepted; the charset only shapes what `action_space.sample()` draws.

Episodes: each reset starts a new session from one of `initial_observations` — a list of images ([H, W, 3], or
frames [n, H, W, 3] whose last history frames are used), an array [N, H, W, 3] of N images, a callable
`initial_observation(rng) -> image`, or None for a text-only start from white placeholder frames (paper §11.3).
Gymnasium's `reset(options={"observation": image_or_None})` overrides it for one episode. An episode is truncated
after `max_steps` steps (dm_env: discount 1.0), or terminated when `termination_fn` says so (discount 0.0).

Reward: 0.0 unless `reward_fn(previous_frames, action, frames) -> float` is given — previous_frames is the last
segment (at a reset, the initial frame [1, H, W, 3]), action the `core.Action` taken, frames the new segment. The
paper's learned reward (§11.2: −C·[d(o_{t+1}, g) − d(o_t, g)] from a steps-to-success model) plugs in here;
`termination_fn` has the same signature and returns a bool.

Seeding: the episode's initial observation and session seed are drawn from a numpy Generator — dm_env's from the
`seed` argument, gymnasium's `np_random` from `reset(seed=…)` — so the same seed and actions give the same frames
(and both classes give the same episodes for the same seed).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence

import dm_env
import gymnasium
import numpy as np
from dm_env import specs
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from unisim.simulator.core import Action, ActionError

InitialObservations = np.ndarray | Sequence[np.ndarray] | Callable[[np.random.Generator], np.ndarray] | None
StepFn = Callable[[np.ndarray, Action, np.ndarray], object]  # (previous_frames, action, frames) → reward or done
TEXT_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
_KEEP = object()  # "no override" for _Episode.reset (None already means a text-only start)


class _Episode:
    """What both environments share: the spaces' numbers, the session, the frame stack, actions and rewards."""

    def __init__(self, backend, initial_observations: InitialObservations = None, *, observation_frames: int = 1,
                 max_steps: int | None = None, reward_fn: StepFn | None = None,
                 termination_fn: StepFn | None = None, control_source: str | None = None,
                 normalize_controls: bool = False):
        if observation_frames < 1:
            raise ValueError(f"observation_frames must be at least 1, not {observation_frames}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 (or None for endless episodes), not {max_steps}")
        self.backend, self.k, self.max_steps = backend, observation_frames, max_steps
        self.reward_fn, self.termination_fn, self.normalize = reward_fn, termination_fn, normalize_controls
        height, width = backend.output_size
        self.observation_shape = (height, width, 3) if self.k == 1 else (self.k, height, width, 3)
        self.has_text = bool(backend.describe().get("text"))
        if control_source is None and len(backend.controls) > 1:
            raise ValueError(f"the model has controls from {sorted(backend.controls)}: pick one (control_source)")
        if control_source is not None and control_source not in backend.controls:
            raise ValueError(f"no control statistics for {control_source!r}; sources: {sorted(backend.controls)}")
        self.source = control_source or next(iter(backend.controls), None)
        if self.source is None and not self.has_text:
            raise ValueError("the model takes neither text nor controls")
        if self.source is not None:
            stats = backend.controls[self.source]
            self.low, self.high = np.asarray(stats.low, np.float32), np.asarray(stats.high, np.float32)
            unit = np.ones_like(self.low)
            self.bounds = (-unit, unit) if self.normalize else (self.low, self.high)  # what the spaces declare
        if isinstance(initial_observations, np.ndarray):
            # One image, or N images stacked; a multi-frame start needs a list (an array would be ambiguous).
            initial_observations = [initial_observations] if initial_observations.ndim == 3 else \
                list(initial_observations)
        if isinstance(initial_observations, Sequence) and not initial_observations:
            raise ValueError("initial_observations is empty (pass None for text-only starts)")
        self.initial = initial_observations
        self.session, self.seed, self.steps, self.done = None, None, 0, True
        self.segment = self.stack = None

    def reset(self, rng: np.random.Generator, observation=_KEEP) -> np.ndarray:
        self.close()
        # Seed first, then the image: the seed does not depend on how much randomness a user callable consumes.
        self.seed = int(rng.integers(2**31))
        if observation is _KEEP:
            observation = self.initial(rng) if callable(self.initial) else \
                None if self.initial is None else self.initial[int(rng.integers(len(self.initial)))]
        self.session = self.backend.new_session(observation, seed=self.seed)
        self.segment = np.array(self.session.last_frames, np.uint8)
        self.stack = np.concatenate([np.repeat(self.segment[:1], self.k, axis=0), self.segment])[-self.k:]
        self.steps, self.done = 0, False
        return self.observation()

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, np.ndarray]:
        """(observation, reward, terminated, truncated, the new segment)."""
        if self.session is None:
            raise RuntimeError("the environment is closed or was never reset")
        action = self.to_action(action)
        return self.advance(action, self.backend.step_sessions([self.session], [action])[0])

    def advance(self, action: Action, frames: np.ndarray) -> tuple[np.ndarray, float, bool, bool, np.ndarray]:
        """The episode moved on by `action`, which generated `frames` (one session's share of a batched step:
        `simulator/vector.py` steps many episodes in one call): (observation, reward, terminated, truncated,
        the new segment)."""
        frames = np.array(frames, np.uint8)
        previous, self.segment = self.segment, frames
        self.stack = np.concatenate([self.stack, frames])[-self.k:]
        self.steps += 1
        observation = self.observation()  # a copy taken before the hooks could touch the frames
        reward = float(self.reward_fn(previous, action, frames)) if self.reward_fn else 0.0
        terminated = bool(self.termination_fn(previous, action, frames)) if self.termination_fn else False
        truncated = self.max_steps is not None and self.steps >= self.max_steps
        self.done = terminated or truncated
        return observation, reward, terminated, truncated, frames.copy()

    def to_action(self, action) -> Action:
        if isinstance(action, Action):
            return action  # as the backend takes it: controls in their own units, whatever normalize_controls says
        if not isinstance(action, Mapping) or set(action) - {"text", "controls"}:
            raise ActionError(f"an action is a dict with 'text' and/or 'controls'; got {action!r:.200}")
        text, controls = action.get("text"), action.get("controls")
        if text is not None:
            text = str(np.asarray(text, dtype=object).item())  # dm_env's StringArray(()) gives 0-d object arrays
        if controls is not None and self.source is not None:
            controls = np.asarray(controls, np.float64)
            if self.normalize:
                controls = self.low + (np.clip(controls, -1, 1) + 1) / 2 * (self.high - self.low)
        # The backend reports a missing text encoder or control source, and bad control shapes, as ActionError.
        return Action(text=text or None, controls=controls, source=self.source if controls is not None else None)

    def observation(self) -> np.ndarray:
        return self.stack[-1].copy() if self.k == 1 else self.stack.copy()

    def close(self) -> None:
        if self.session is not None:
            session, self.session, self.done = self.session, None, True
            self.backend.close_session(session)


class SimulatorEnv(dm_env.Environment):
    """A dm_env environment over a simulator backend (see the module docstring). `step` after the end of an
    episode, or on a fresh environment, starts a new one and ignores the action (dm_env's contract)."""

    def __init__(self, backend, initial_observations: InitialObservations = None, *, seed: int | None = None,
                 **options):
        self._episode = _Episode(backend, initial_observations, **options)
        self._rng = np.random.default_rng(seed)

    def reset(self) -> dm_env.TimeStep:
        return dm_env.restart(self._episode.reset(self._rng))

    def step(self, action) -> dm_env.TimeStep:
        if self._episode.done:
            return self.reset()
        observation, reward, terminated, truncated, _ = self._episode.step(action)
        if terminated:
            return dm_env.termination(reward, observation)
        return (dm_env.truncation if truncated else dm_env.transition)(reward, observation)

    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray(self._episode.observation_shape, np.uint8, 0, 255, name="frames")

    def action_spec(self) -> dict[str, specs.Array]:
        spec = {}
        if self._episode.has_text:
            spec["text"] = specs.StringArray((), name="text")
        if self._episode.source is not None:
            low, high = self._episode.bounds
            spec["controls"] = specs.BoundedArray(low.shape, np.float32, low, high, name="controls")
        return spec

    def close(self) -> None:
        self._episode.close()


class SimulatorGymEnv(gymnasium.Env):
    """A gymnasium environment over a simulator backend (see the module docstring). `info` holds the session
    `seed`, the episode's `steps` and, after a step, the whole generated segment `frames`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, backend, initial_observations: InitialObservations = None, *, render_mode: str | None = None,
                 render_fps: float = 10, text_max_length: int = 256, text_charset: str = TEXT_CHARSET, **options):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode is None or 'rgb_array', not {render_mode!r}")
        self._episode = episode = _Episode(backend, initial_observations, **options)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": render_fps}
        self.observation_space = spaces.Box(0, 255, episode.observation_shape, np.uint8)
        action = {}
        if episode.has_text:
            # With controls in every action an empty text is a valid (controls-only) action; without, it is not.
            action["text"] = spaces.Text(text_max_length, min_length=0 if episode.source else 1, charset=text_charset)
        if episode.source is not None:
            action["controls"] = spaces.Box(*episode.bounds, episode.low.shape, np.float32)
        self.action_space = spaces.Dict(action)

        def make(**kwargs):
            return SimulatorGymEnv(backend, initial_observations, **{
                "render_fps": render_fps, "text_max_length": text_max_length, "text_charset": text_charset,
                **options, **kwargs})

        # A spec whose entry point makes a fresh environment on the same backend: `env.spec.make()` and
        # gymnasium's tools (check_env's render-mode and close checks, make_vec) work without a registered id.
        # A closure, because gymnasium deep-copies spec kwargs and the backend must be shared, not copied.
        self.spec = EnvSpec("unisim/Simulator-v0", entry_point=make, kwargs={"render_mode": render_mode})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"observation"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; the only one is 'observation'")
        observation = self._episode.reset(self.np_random, options.get("observation", _KEEP))
        return observation, {"seed": self._episode.seed, "steps": 0}

    def step(self, action):
        if self._episode.done:
            raise gymnasium.error.ResetNeeded("call reset() before step(), and again after an episode ends")
        observation, reward, terminated, truncated, frames = self._episode.step(action)
        return observation, reward, terminated, truncated, {"seed": self._episode.seed, "steps": self._episode.steps,
                                                            "frames": frames}

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self._episode.segment is None:
            return None
        return self._episode.segment[-1].copy()

    def close(self) -> None:
        self._episode.close()
