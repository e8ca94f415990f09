"""Improving a policy only inside the learned simulator: imitation of hindsight-relabelled imagined rollouts.

The algorithm, each round (`improve`):

1. **Imagine.** A batch of episodes in the learned simulator, through its public interface (`Simulator.new_session`
   and `step_sessions`: one batched sampler call per segment for the whole batch). Each starts from recorded frames
   (a clip of the training data: what a user's dataset holds, never the physics world), commands a random task, and
   takes the current policy's chunk plus exploration noise as the segment's per-frame controls. Actions are controls
   only: the task is the policy's business, the simulator renders what the controls do.
2. **Reward from generated frames.** The effector and blocks are found by colour in the start frame and in the last
   frame of every generated segment (`agents.detect`), in world metres.
3. **Hindsight relabelling.** For every episode and every task the generated frames show accomplished
   (`agents.tasks.hindsight_tasks`) within that task's segment limit, the episode up to the first segment that
   accomplishes it becomes a demonstration of that task: its observations and the chunks taken. Pointing has no
   recorded demonstration at all; here every imagined episode whose effector ends near some block teaches one.
4. **Fit.** The policy is fitted again (`policy.fit`) on the recorded demonstrations and every relabelled one so far.

Why this and not policy gradients: at a few imagined segments a second on a CPU, the budget holds a few thousand
episodes; relabelling turns nearly every one of them into supervised data (a REINFORCE learner would get a learning
signal only from the rare successes of the commanded task), and the step is a regression, which trains stably. It is
expert iteration (filtered imitation) with hindsight relabelling, as in the paper's own use of UniSim for planning
data (§4.1), here for low-level controls.

What this module never touches: pybullet, `samples.tabletop` and `agents.world` (the physics world, for judging
only); tests/test_agents.py checks that importing it imports neither.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from unisim.agents import detect
from unisim.agents.policy import Demos, Policy, fit
from unisim.agents.tasks import FAMILIES, POINT_SEGMENTS, PUSH_SEGMENTS, Task, hindsight_tasks, random_task, succeeded
from unisim.simulator.core import Action, Simulator


@dataclasses.dataclass
class Imagined:
    """One imagined episode: the commanded task, the observations (the start and each segment's last frame, at
    the base size), the chunks taken, and the detected positions at each of those frames."""

    task: Task
    frames: list[np.ndarray]
    chunks: list[np.ndarray]
    positions: list

    def success(self) -> bool:
        """The commanded task done, as the generated frames show it, within its segment limit."""
        return any(succeeded(self.task, self.positions[0], p) for p in self.positions[1:self.task.segments + 1])


def imagine(sim: Simulator, policy: Policy, starts: list[np.ndarray], tasks: list[Task], segments: int,
            rng: np.random.Generator, noise: float = 0.0, seed: int = 0, stop_on_success: bool = False
            ) -> list[Imagined]:
    """Episodes from `starts` (each [n, h, w, 3] uint8 recorded frames) in the learned simulator, `segments` steps
    each (with `stop_on_success`, an episode's later segments are still sampled, but not recorded)."""
    sessions = [sim.new_session(frames, seed=seed + i) for i, frames in enumerate(starts)]
    episodes = [Imagined(task, [s.history[-1]], [], [detect.positions(s.history[-1])])
                for task, s in zip(tasks, sessions)]
    done = [False] * len(episodes)
    for _ in range(segments):
        chunks = policy.act(np.stack([e.frames[-1] for e in episodes]), tasks, rng, noise)
        videos = sim.step_sessions(sessions, [Action(controls=c) for c in chunks])
        for i, (episode, chunk, video) in enumerate(zip(episodes, chunks, videos)):
            if done[i]:
                continue
            episode.chunks.append(chunk)
            episode.frames.append(video[-1])
            episode.positions.append(detect.positions(video[-1]))
            if stop_on_success and succeeded(episode.task, episode.positions[0], episode.positions[-1]):
                done[i] = True
    return episodes


def relabel(episodes: list[Imagined]) -> list[tuple[np.ndarray, Task, np.ndarray]]:
    """(observation, task, chunk) samples of every task each episode accomplishes, up to the first segment that
    accomplishes it and within the task's segment limit (module docstring, step 3)."""
    samples = []
    for episode in episodes:
        first: dict[Task, int] = {}
        for k in range(1, len(episode.frames)):
            for task in hindsight_tasks(episode.positions[0], episode.positions[k]):
                first.setdefault(task, k)
        for task, k in first.items():
            if k <= task.segments:
                samples += [(episode.frames[j], task, episode.chunks[j]) for j in range(k)]
    return samples


def improve(sim: Simulator, policy: Policy, recorded: Demos, starts: list[np.ndarray], *, budget_s: float,
            batch: int = 32, noise: float = 0.01, fit_steps: int = 300, seed: int = 0,
            log=print) -> tuple[Policy, dict]:
    """Rounds of imagine → relabel → fit until `budget_s` of wall time is spent (at least one; a round that has begun
    ends). Returns the improved policy and a summary (rounds, imagined episodes and segments, relabelled samples per
    family, the commanded tasks' success inside the simulator per round)."""
    rng = np.random.default_rng(seed)
    began = time.monotonic()
    relabelled: list[Demos] = []
    summary = {"rounds": 0, "episodes": 0, "segments": 0, "samples": {f: 0 for f in FAMILIES}, "history": []}
    segments = max(POINT_SEGMENTS, PUSH_SEGMENTS)
    while summary["rounds"] == 0 or time.monotonic() - began < budget_s:
        index = rng.integers(len(starts), size=batch)
        tasks = [random_task(rng, FAMILIES[i % len(FAMILIES)]) for i in range(batch)]
        episodes = imagine(sim, policy, [starts[i] for i in index], tasks, segments, rng, noise,
                           seed=seed + 1000 * summary["rounds"])
        samples = relabel(episodes)
        commanded = np.mean([e.success() for e in episodes])
        if samples:
            relabelled.append(Demos.of(samples))
        for _, task, _ in samples:
            summary["samples"][task.family] += 1
        summary["rounds"] += 1
        summary["episodes"] += batch
        summary["segments"] += batch * segments
        summary["history"].append({"round": summary["rounds"], "seconds": time.monotonic() - began,
                                   "commanded_success_in_simulator": float(commanded), "relabelled": len(samples)})
        policy = fit(policy, Demos.concatenate([recorded, *relabelled]), fit_steps, seed=seed + summary["rounds"])
        log(f"round {summary['rounds']}: {time.monotonic() - began:.0f} s, commanded tasks done in the simulator "
            f"{commanded:.2f}, {len(samples)} relabelled samples ({summary['samples']})")
    return policy, summary
