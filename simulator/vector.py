"""`SimulatorVectorEnv`: N environments over one simulator, stepped together in ONE batched sampler call per step.

The batching that matters most on an accelerator is N environments in one model call; a gymnasium `VectorEnv` gives
it in-process, with no server:

    from unisim.simulator.vector import SimulatorVectorEnv

    envs = SimulatorVectorEnv(sim, initial_images, num_envs=32, max_steps=20)
    observations, infos = envs.reset(seed=0)             # [32, H, W, 3] uint8
    actions = envs.action_space.sample()                  # {"text": (32 strings), "controls": [32, D]}
    observations, rewards, terminated, truncated, infos = envs.step(actions)

Each sub-environment is what `SimulatorGymEnv` is (simulator/envs.py: observation, action, reward and termination
hooks, `max_steps`, `normalize_controls`, seeding); their spaces are that environment's, batched
(`gymnasium.vector.utils.batch_space`). A step sends every running sub-environment's action to
`backend.step_sessions` at once — one sampling call, padded by the simulator to a power of two.

Autoreset follows gymnasium's default (`AutoresetMode.NEXT_STEP`): a sub-environment whose episode ended on a step
is reset on the next `step`, which ignores its action there and returns its first observation with reward 0 and
neither terminated nor truncated. `reset(seed=s)` seeds sub-environment i with s + i.

Infos are gymnasium's vector form: {"seed": [N] int, "steps": [N] int, and "_seed", "_steps" masks}; after a step,
"frames" is an object array of each sub-environment's generated segment (None where it was reset).
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from unisim.simulator.envs import InitialObservations, SimulatorGymEnv, _Episode


class SimulatorVectorEnv(VectorEnv):
    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, backend, initial_observations: InitialObservations = None, *, num_envs: int,
                 render_mode: str | None = None, **options):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        # Sub-environment i is a SimulatorGymEnv (its spaces, its options); the batch steps their episodes together.
        envs = [SimulatorGymEnv(backend, initial_observations, render_mode=render_mode, **options)
                for _ in range(num_envs)]
        self.backend, self.num_envs, self.render_mode = backend, num_envs, render_mode
        self.single_observation_space, self.single_action_space = envs[0].observation_space, envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._envs = envs  # each reset through its own env: its np_random seeds the episodes, as gymnasium's does
        self._episodes: list[_Episode] = [env._episode for env in envs]
        self._reset_next = np.zeros(num_envs, bool)  # ended on the last step: reset on this one

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, (list, tuple)) else [None if seed is None else seed + i
                                                             for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} environments")
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}")
        observations = [env.reset(seed=s)[0] for env, s in zip(self._envs, seeds)]
        self._reset_next[:] = False
        return np.stack(observations), self._infos()

    def step(self, actions):
        n = self.num_envs
        observations = [None] * n
        rewards, terminated, truncated = np.zeros(n, np.float64), np.zeros(n, bool), np.zeros(n, bool)
        frames = np.full(n, None, dtype=object)
        running = [i for i in range(n) if not self._reset_next[i]]
        for i in range(n):
            if self._reset_next[i]:  # the autoreset step: its action is ignored
                observations[i] = self._envs[i].reset()[0]
            elif self._episodes[i].session is None:
                raise gymnasium.error.ResetNeeded("call reset() before step()")
        if running:
            chosen = [self._episodes[i].to_action(self._single_action(actions, i)) for i in running]
            generated = self.backend.step_sessions([self._episodes[i].session for i in running], chosen)
            for i, action, segment in zip(running, chosen, generated):
                observation, reward, ended, cut, segment = self._episodes[i].advance(action, segment)
                observations[i], rewards[i], terminated[i], truncated[i], frames[i] = \
                    observation, reward, ended, cut, segment
        self._reset_next = terminated | truncated
        infos = self._infos()
        infos["frames"], infos["_frames"] = frames, np.array([f is not None for f in frames])
        return np.stack(observations), rewards, terminated, truncated, infos

    def _single_action(self, actions, i: int) -> dict:
        """Sub-environment i's action from the batched one ({"text": [N], "controls": [N, D]})."""
        if not isinstance(actions, dict):
            raise ValueError(f"actions are a dict of batched 'text' and/or 'controls', not {type(actions).__name__}")
        return {key: value[i] for key, value in actions.items() if value is not None}

    def _infos(self) -> dict:
        ones = np.ones(self.num_envs, bool)
        return {"seed": np.array([e.seed for e in self._episodes]), "_seed": ones,
                "steps": np.array([e.steps for e in self._episodes]), "_steps": ones}

    def render(self):
        if self.render_mode is None:
            return None
        return tuple(None if e.segment is None else e.segment[-1].copy() for e in self._episodes)

    def close_extras(self, **kwargs):
        for env in self._envs:
            env.close()
