"""The tabletop tasks an agent is trained and judged on, and their success rule — one rule, applied to positions,
whether the positions come from pybullet's state (judging in the physics world) or from colour detection on frames
(rewards inside the learned simulator, `agents.detect`).

- **push**: the world's 16 instructions ("push the red block to the left"); success = the named block moved
  ≥ `SUCCESS_DISTANCE` (5 cm) along the commanded direction since the episode began (the world's own reward);
  at most `PUSH_SEGMENTS` segments.
- **point**: "move to the {colour} block", which no recorded demonstration contains; success = the effector's centre
  within `POINT_RADIUS` (9 cm) of that block's centre (contact is at about 6.5 cm: effector radius 4.5 cm + half a
  block); at most `POINT_SEGMENTS` segments (24 control steps).

An episode is checked at the end of every segment (8 control steps: what the simulator makes per step) and ends at
the first success or after its last segment, as Language Table's reward modules end an episode on success.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unisim.samples.tabletop_spec import BLOCK_COLORS, DIRECTIONS, INSTRUCTION_TEMPLATES, SUCCESS_DISTANCE

FAMILIES = ("point", "push")
COLOURS = tuple(BLOCK_COLORS)
DIRECTION_NAMES = tuple(DIRECTIONS)
POINT_RADIUS = 0.09
POINT_SEGMENTS, PUSH_SEGMENTS = 3, 4
POINT_TEMPLATE = "move to the {} block"
CODE_SIZE = len(FAMILIES) + len(COLOURS) + len(DIRECTION_NAMES)


@dataclasses.dataclass(frozen=True)
class Task:
    family: str  # "point" or "push"
    colour: str
    direction: str | None = None  # push only

    def __post_init__(self):
        if self.family not in FAMILIES or self.colour not in COLOURS:
            raise ValueError(f"not a task: {self}")
        if (self.family == "push") != (self.direction in DIRECTION_NAMES):
            raise ValueError(f"a push names one of {DIRECTION_NAMES} and a point none: {self}")

    @property
    def instruction(self) -> str:
        if self.family == "point":
            return POINT_TEMPLATE.format(self.colour)
        return INSTRUCTION_TEMPLATES[self.direction].format(self.colour)

    @property
    def segments(self) -> int:
        return POINT_SEGMENTS if self.family == "point" else PUSH_SEGMENTS

    def code(self) -> np.ndarray:
        """The policy's task input: one-hot family, colour and direction (none for a point) [CODE_SIZE]."""
        out = np.zeros(CODE_SIZE, np.float32)
        out[FAMILIES.index(self.family)] = 1
        out[len(FAMILIES) + COLOURS.index(self.colour)] = 1
        if self.direction is not None:
            out[len(FAMILIES) + len(COLOURS) + DIRECTION_NAMES.index(self.direction)] = 1
        return out


ALL_TASKS = tuple([Task("point", c) for c in COLOURS]
                  + [Task("push", c, d) for c in COLOURS for d in DIRECTION_NAMES])
PUSHES = tuple(t for t in ALL_TASKS if t.family == "push")  # the world's 16 instructions, in one fixed order


def task_of(instruction: str) -> Task | None:
    """The task an instruction names (a domain prefix such as "language_table_tabletop_sim: " is ignored), or
    None for text that names none."""
    text = instruction.split(": ", 1)[-1].strip()
    for task in ALL_TASKS:
        if task.instruction == text:
            return task
    return None


def random_task(rng: np.random.Generator, family: str | None = None) -> Task:
    tasks = [t for t in ALL_TASKS if family in (None, t.family)]
    return tasks[rng.integers(len(tasks))]


@dataclasses.dataclass(frozen=True)
class Positions:
    """Where things are on the board, world metres (x, y); None where not known (a detector found nothing)."""

    effector: np.ndarray | None
    blocks: dict[str, np.ndarray | None]


def succeeded(task: Task, start: Positions, now: Positions) -> bool:
    """The task's success rule (module docstring) from the positions at the episode's start and now."""
    if task.family == "point":
        block, effector = now.blocks.get(task.colour), now.effector
        return block is not None and effector is not None and float(np.linalg.norm(effector - block)) <= POINT_RADIUS
    before, after = start.blocks.get(task.colour), now.blocks.get(task.colour)
    if before is None or after is None:
        return False
    return float((after - before) @ np.asarray(DIRECTIONS[task.direction])) >= SUCCESS_DISTANCE


def hindsight_tasks(start: Positions, now: Positions) -> list[Task]:
    """Every task that the change from `start` to `now` accomplishes (hindsight relabelling): a point at each block
    within reach of the effector, a push of each block along each direction it moved far enough."""
    return [task for task in ALL_TASKS if succeeded(task, start, now)]
