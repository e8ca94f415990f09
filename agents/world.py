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

import numpy as np

from unisim.fileio import images
from unisim.agents.stats import wilson
from unisim.agents.tasks import COLOURS, PUSHES, Positions, Task, succeeded
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


# ---- long-horizon goals and plans (the planner's judge)

GOAL_PUSHES = (3, 5)  # scripted pushes that make a goal (the paper: 3–4 blocks moved)
PLAN_INSTRUCTIONS = 5  # instructions a planner gives per goal (the paper's 5)
MOVED = 2 * BLOCK_HALF  # a block the goal displaced by at least this much (one block width) counts as moved
PUSH_STEPS = 30  # control steps a push may take (the recorded episodes' limit)


@dataclasses.dataclass
class Goal:
    """A long-horizon goal: the layout of `seed` after `pushes`; the goal frame as a planner sees it, the blocks'
    positions at the start and in the goal (pybullet's state), and which blocks it moved."""

    seed: int
    pushes: list[Task]
    frame: np.ndarray
    start: dict[str, np.ndarray]
    blocks: dict[str, np.ndarray]

    @property
    def moved(self) -> list[str]:
        return [c for c in COLOURS if np.linalg.norm(self.blocks[c] - self.start[c]) >= MOVED]


def execute(world: tabletop.TabletopWorld, task: Task, frames: list | None = None,
            size: tuple[int, int] = (24, 40)) -> None:
    """One instruction carried out by the scripted controller (the world's own push, without its noise): until the
    block has moved `PUSH_DISTANCE` along the direction or `PUSH_STEPS` have passed. With `frames`, every frame is
    appended to it as observed at `size` (slower: rendering is most of a step)."""
    start, direction, pushing = world.block_xy(task.colour), np.asarray(DIRECTIONS[task.direction]), [False]
    for _ in range(PUSH_STEPS):
        if (world.block_xy(task.colour) - start) @ direction >= tabletop.PUSH_DISTANCE:
            break
        frame = world.step(scripted_action(world, task, pushing), render=frames is not None)
        if frames is not None:
            frames.append(observe(frame, size))


def make_goal(world: tabletop.TabletopWorld, seed: int, size: tuple[int, int] = (24, 40)) -> Goal:
    """The goal of layout `seed`: 3 to 5 pushes of blocks and directions drawn from the seed (each feasible where
    the blocks are then, as the world draws its tasks), carried out by `execute`."""
    rng = np.random.default_rng([seed, 3])
    world.reset(seed)
    start = {c: world.block_xy(c) for c in COLOURS}
    pushes = []
    for _ in range(int(rng.integers(GOAL_PUSHES[0], GOAL_PUSHES[1] + 1))):
        pushes.append(Task("push", *tabletop.draw_task(world, rng)))
        execute(world, pushes[-1])
    return Goal(seed, pushes, observe(world.render(), size), start, {c: world.block_xy(c) for c in COLOURS})


def distance_reduction(start: dict, end: dict, goal: dict, colours) -> float:
    """The paper's Eq. 4: (‖s₀ − s_goal‖ − ‖s_T − s_goal‖) / ‖s₀ − s_goal‖, s the stacked positions of `colours`."""
    d0 = np.sqrt(sum(float(np.sum((start[c] - goal[c]) ** 2)) for c in colours))
    d1 = np.sqrt(sum(float(np.sum((end[c] - goal[c]) ** 2)) for c in colours))
    return (d0 - d1) / d0 if d0 > 0 else 0.0


def oracle(blocks: dict[str, np.ndarray], goal: Goal) -> Task | None:
    """The ceiling: knowing both states, the push that brings its block nearest its goal position (a push moves a
    block `PUSH_DISTANCE`); None when none gets a block a centimetre nearer."""
    best, gain = None, 0.01
    for colour in COLOURS:
        offset = goal.blocks[colour] - blocks[colour]
        for name, vector in DIRECTIONS.items():
            g = np.linalg.norm(offset) - np.linalg.norm(offset - np.asarray(vector) * tabletop.PUSH_DISTANCE)
            if g > gain:
                best, gain = Task("push", colour, name), g
    return best


def run_plan(world: tabletop.TabletopWorld, goal: Goal, planner, size: tuple[int, int] = (24, 40),
             rng: np.random.Generator | None = None, frames: list | None = None) -> dict:
    """From the goal's layout, `PLAN_INSTRUCTIONS` instructions, each chosen by `planner` (a `Planner`, "random" or
    "oracle") from the frame it sees and the goal frame, each carried out by `execute`; RDG over the moved blocks and
    over all blocks from pybullet's state."""
    frame = world.reset(goal.seed)
    chosen = []
    for _ in range(PLAN_INSTRUCTIONS):
        seen = observe(frame, size)
        if frames is not None:
            frames.append(seen)
        if planner == "random":
            task = PUSHES[(rng or np.random.default_rng(goal.seed)).integers(len(PUSHES))]
        elif planner == "oracle":
            task = oracle({c: world.block_xy(c) for c in COLOURS}, goal)
        else:
            task = planner.choose(seen[None], goal.frame[None])[0]
        if task is None:
            break
        chosen.append(task.instruction)
        execute(world, task, frames, size)
        frame = world.render()
    end = {c: world.block_xy(c) for c in COLOURS}
    return {"seed": goal.seed, "pushes": len(goal.pushes), "moved": goal.moved, "instructions": chosen,
            "rdg_moved": distance_reduction(goal.start, end, goal.blocks, goal.moved),
            "rdg_all": distance_reduction(goal.start, end, goal.blocks, COLOURS)}


def evaluate_plans(planners: dict, seeds: range, size: tuple[int, int] = (24, 40), log=None) -> dict:
    """Every planner on the goals of `seeds`: per planner the mean RDG (moved blocks, all blocks) with 95 % intervals,
    the number of goals and each goal's outcome."""
    from unisim.agents.stats import mean_interval

    outcomes = {name: [] for name in planners}
    with tabletop.TabletopWorld() as world:
        for i, seed in enumerate(seeds):
            goal = make_goal(world, seed, size)
            for name, planner in planners.items():
                outcomes[name].append(run_plan(world, goal, planner, size, np.random.default_rng([seed, 4])))
            if log and (i + 1) % 10 == 0:
                log(f"{i + 1}/{len(seeds)} goals: " + ", ".join(
                    f"{n} {np.mean([o['rdg_moved'] for o in v]):.2f}" for n, v in outcomes.items()))
    rows = {}
    for name, found in outcomes.items():
        moved, every = [o["rdg_moved"] for o in found], [o["rdg_all"] for o in found]
        rows[name] = {"rdg_moved": float(np.mean(moved)), "rdg_all": float(np.mean(every)), "goals": len(found),
                      "rdg_moved_interval": list(mean_interval(moved)), "rdg_all_interval": list(mean_interval(every)),
                      "outcomes": found}
    return rows
