"""Judging agents in the physics world: the pybullet tabletop (`samples/tabletop.py`) plays the real world. A policy
sees what it would see from a camera — the rendered frame resized to its base size, as the converter and the
trainer resize — and its chunk of controls is applied one control step at a time; success is read from the physics
state (`agents.tasks.succeeded` on pybullet's positions), checked after every segment.

This module is for evaluation only: nothing in `agents/imagination.py` (learning inside the learned simulator)
imports it or pybullet (tests/test_agents.py checks).

References: `random` (uniform controls within the action bound) and `scripted` (the ceiling, acting on the physics
state every control step: the world's own scripted push without its noise; for a point, a straight line to a
standoff short of the block).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unisim.fileio import images
from unisim.agents.tasks import COLOURS, Positions, Task, succeeded
from unisim.samples import tabletop
from unisim.samples.tabletop_spec import BLOCK_HALF, DIRECTIONS, EFFECTOR_RADIUS, SCRIPTED_MAX_STEP

POINT_STANDOFF = EFFECTOR_RADIUS + BLOCK_HALF + 0.01  # where the scripted point stops: just short of contact


def task_for(seed: int, family: str, world: tabletop.TabletopWorld) -> Task:
    """The held-out task of a layout: a push the world's own task rule would give it (feasible on the
    workspace), or a point at a block drawn from the seed."""
    rng = np.random.default_rng([seed, 2])
    if family == "push":
        colour, direction = tabletop.draw_task(world, rng)
        return Task("push", colour, direction)
    return Task("point", COLOURS[rng.integers(len(COLOURS))])


def state(world: tabletop.TabletopWorld) -> Positions:
    return Positions(effector=world.effector_xy(), blocks={c: world.block_xy(c) for c in COLOURS})


def observe(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A rendered frame as the policy sees it: resized as the simulator resizes its observations (INTER_AREA, as the
    converter and the trainer's input do)."""
    return images.resize(frame, size)


def scripted_action(world: tabletop.TabletopWorld, task: Task, pushing: list[bool]) -> np.ndarray:
    """One control step of the scripted reference (reads the physics state: the ceiling, not a learner)."""
    if task.family == "push":
        direction = np.asarray(DIRECTIONS[task.direction])
        waypoint, pushing[0] = tabletop.scripted_waypoint(world.target, world.block_xy(task.colour), direction,
                                                          pushing[0])
    else:
        offset = world.target - world.block_xy(task.colour)
        waypoint = world.block_xy(task.colour) + offset / max(np.linalg.norm(offset), 1e-9) * POINT_STANDOFF
    return tabletop.step_toward(world.target, waypoint)


@dataclasses.dataclass
class Episode:
    seed: int
    task: Task
    success: bool
    segments: int  # segments taken (the episode ends at the first success)
    frames: list[np.ndarray]  # the policy's observations: the start and each segment's end, at its size


def run_episode(world: tabletop.TabletopWorld, seed: int, family: str, policy, size: tuple[int, int],
                chunk: int, rng: np.random.Generator | None = None) -> Episode:
    """One held-out episode. `policy` is a `Policy` (or anything with its `act`), "random" or "scripted"."""
    frame = world.reset(seed)
    task = task_for(seed, family, world)
    start, frames, pushing = state(world), [observe(frame, size)], [False]
    for segment in range(1, task.segments + 1):
        if policy == "random":
            chunk_actions = (rng or np.random.default_rng(seed)).uniform(-SCRIPTED_MAX_STEP, SCRIPTED_MAX_STEP,
                                                                        (chunk, 2))
        elif policy != "scripted":
            chunk_actions = policy.act(frames[-1][None], [task])[0]
        for k in range(chunk):
            action = scripted_action(world, task, pushing) if policy == "scripted" else chunk_actions[k]
            frame = world.step(action)
        frames.append(observe(frame, size))
        if succeeded(task, start, state(world)):
            return Episode(seed, task, True, segment, frames)
    return Episode(seed, task, False, task.segments, frames)


def evaluate(policy, seeds: range, family: str, size: tuple[int, int] = (24, 40), chunk: int = 8,
             log=None) -> dict:
    """Success of `policy` on the layouts of `seeds` for one task family: rate, episodes, Wilson 95 % interval, and
    each episode's outcome (seed, instruction, success, segments taken)."""
    rng = np.random.default_rng([seeds.start, 99])
    outcomes = []
    with tabletop.TabletopWorld() as world:
        for i, seed in enumerate(seeds):
            episode = run_episode(world, seed, family, policy, size, chunk, rng)
            outcomes.append({"seed": seed, "task": episode.task.instruction, "success": episode.success,
                             "segments": episode.segments})
            if log and (i + 1) % 25 == 0:
                log(f"{family}: {i + 1}/{len(seeds)} episodes, {sum(o['success'] for o in outcomes)} successes")
    wins = sum(o["success"] for o in outcomes)
    return {"success": wins / len(seeds), "episodes": len(seeds), "interval": wilson(wins, len(seeds)),
            "outcomes": outcomes}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % at z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
