"""A small real-physics tabletop world in pybullet, in the spirit of Language Table (Lynch et al. 2023).

World: a flat board on which four 4 cm cubes (red, blue, green, yellow) slide with friction, pushed by a
magenta cylindrical end effector (4.5 cm radius). No robot arm is simulated: the effector is a rigid body
held by a fixed constraint whose pivot is moved toward the commanded target, so it pushes blocks through
ordinary contacts (it does not collide with the board, so it glides without friction).

Frames: world metres, z up, board surface at z = 0. The workspace (where effector targets are clipped and
blocks are placed) is x in [0.15, 0.6], y in [-0.3048, 0.3048], Language Table's board. The camera looks
straight down at the workspace's centre, image up toward -x, so in the 640x360 image: image right = +y,
image left = -y, image up = -x, image down = +x.

Departures from Language Table, for a model that must learn this world at the paper's 24x40 base size on a
CPU (issue 17; each is a constant below):
- the camera looks straight down (Language Table's looks at an angle), so the workspace fills the frame and
  one pixel of the 24x40 frame is ~2 cm everywhere on the board;
- the effector is 4.5 cm in radius (Language Table's is ~2.5 cm), ~5 pixels across at 24x40 instead of ~2, so
  it can be seen, learned and found by colour (`unisim eval`) at that size;
- frames are rendered at half size (320x180) and upscaled to the release's 640x360: 4x less rendering time,
  and nothing is lost at the 24x40 the model sees;
- the scripted policy's actions carry Gaussian noise (`ACTION_NOISE` per axis), so that the recorded controls
  say something the instruction and the history do not: a model can only predict the effector's path by
  following them.

Control: 10 Hz. An action is a 2-D delta (dx, dy) in metres, clipped to [-0.1, 0.1] per axis, added to the
effector *target* (which is clipped to the workspace); each control step runs 24 physics substeps at 240 Hz
while the constraint pivot moves linearly from the old target to the new one.

Instructions follow the image-direction convention above: "push the red block to the left" means move the
red block toward image left (-y); "up"/"down" mean toward the top/bottom of the frame (-x/+x).

Everything is deterministic for a seed: each `reset` rebuilds the simulation, and the rendering uses the
CPU TinyRenderer, so equal seeds give byte-identical frames.
"""

from __future__ import annotations

import argparse

import numpy as np
import pybullet as p

from unisim.samples import language_table_format
from unisim.samples.tabletop_spec import (  # noqa: F401  (the world's facts, also read as tabletop.NAME)
    ACTION_NOISE, BLOCK_COLORS, BLOCK_HALF, BOARD_RGB, CAMERA_EYE, CAMERA_FOV_DEG, CAMERA_TARGET, CAMERA_UP, CONTROL_HZ,
    DIRECTIONS, EFFECTOR_HEIGHT, EFFECTOR_RADIUS, EFFECTOR_RGB, IMAGE_HEIGHT, IMAGE_WIDTH, INSTRUCTION_TEMPLATES,
    MAX_ACTION, PHYSICS_HZ, PUSH_DISTANCE, RENDER_SCALE, SAMPLE_NAME, SCRIPTED_MAX_STEP, STANDOFF, SUBSTEPS,
    SUCCESS_DISTANCE, WORKSPACE_X, WORKSPACE_Y, inside_workspace, push_feasible)

def _rgba(rgb):
    return [c / 255.0 for c in rgb] + [1.0]


class TabletopWorld:
    """One pybullet DIRECT client holding the board, four blocks and the effector."""

    def __init__(self):
        self.client = p.connect(p.DIRECT)
        self._view = p.computeViewMatrix(CAMERA_EYE, CAMERA_TARGET, CAMERA_UP, physicsClientId=self.client)
        self._proj = p.computeProjectionMatrixFOV(CAMERA_FOV_DEG, IMAGE_WIDTH / IMAGE_HEIGHT, 0.05, 3.0,
                                                  physicsClientId=self.client)
        self.blocks: dict[str, int] = {}
        self.target = np.zeros(2)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.client is not None:
            p.disconnect(physicsClientId=self.client)
            self.client = None

    def reset(self, seed: int) -> np.ndarray:
        """Rebuilds the scene (so state never leaks between episodes) with a layout drawn from `seed`."""
        rng = np.random.default_rng(seed)
        c = self.client
        p.resetSimulation(physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=1.0 / PHYSICS_HZ, numSubSteps=0, numSolverIterations=50,
                                    deterministicOverlappingPairs=1, physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        # The board extends well past the workspace so pushed blocks stay on it and it fills the whole frame.
        board_half = [0.6, 0.9, 0.01]
        board = p.createMultiBody(
            0, p.createCollisionShape(p.GEOM_BOX, halfExtents=board_half, physicsClientId=c),
            p.createVisualShape(p.GEOM_BOX, halfExtents=board_half, rgbaColor=_rgba(BOARD_RGB), physicsClientId=c),
            [0.25, 0.0, -0.01], physicsClientId=c)
        p.changeDynamics(board, -1, lateralFriction=0.5, physicsClientId=c)

        positions = _sample_separated_points(rng, len(BLOCK_COLORS) + 1, min_distance=STANDOFF + 0.02, margin=0.05)
        self.blocks = {}
        block_shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3, physicsClientId=c)
        for (name, rgb), xy in zip(BLOCK_COLORS.items(), positions):
            yaw = rng.uniform(0.0, np.pi / 2)
            visual = p.createVisualShape(p.GEOM_BOX, halfExtents=[BLOCK_HALF] * 3, rgbaColor=_rgba(rgb),
                                         physicsClientId=c)
            body = p.createMultiBody(0.05, block_shape, visual, [xy[0], xy[1], BLOCK_HALF],
                                     p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=c)
            p.changeDynamics(body, -1, lateralFriction=0.5, spinningFriction=0.001, physicsClientId=c)
            self.blocks[name] = body

        start = positions[-1]
        self.effector = p.createMultiBody(
            1.0, p.createCollisionShape(p.GEOM_CYLINDER, radius=EFFECTOR_RADIUS, height=EFFECTOR_HEIGHT,
                                        physicsClientId=c),
            p.createVisualShape(p.GEOM_CYLINDER, radius=EFFECTOR_RADIUS, length=EFFECTOR_HEIGHT,
                                rgbaColor=_rgba(EFFECTOR_RGB), physicsClientId=c),
            self._effector_pose(start), physicsClientId=c)
        p.setCollisionFilterPair(self.effector, board, -1, -1, 0, physicsClientId=c)
        p.changeDynamics(self.effector, -1, lateralFriction=0.3, physicsClientId=c)
        self._constraint = p.createConstraint(self.effector, -1, -1, -1, p.JOINT_FIXED, [0, 0, 0], [0, 0, 0],
                                              self._effector_pose(start), physicsClientId=c)
        p.changeConstraint(self._constraint, self._effector_pose(start), maxForce=200, physicsClientId=c)
        self.target = np.array(start, dtype=np.float64)
        for _ in range(SUBSTEPS):  # let blocks settle onto the board before the first frame
            p.stepSimulation(physicsClientId=c)
        return self.render()

    # -- control and state -------------------------------------------------------------------------------
    def step(self, action, render: bool = True) -> np.ndarray | None:
        """Applies one 10 Hz delta action and returns the frame after it (None with `render` False: rendering is
        most of a step's time, and a controller that reads the state needs no frame)."""
        delta = np.clip(np.asarray(action, dtype=np.float64), -MAX_ACTION, MAX_ACTION)
        start = self.target
        self.target = np.array([np.clip(start[0] + delta[0], *WORKSPACE_X),
                                np.clip(start[1] + delta[1], *WORKSPACE_Y)])
        # Sliding the pivot across the substeps (rather than jumping it) caps the effector speed at |delta| * 10 Hz,
        # so contacts stay gentle at the scripted 3 cm/step; at the 0.1 m/step limit blocks get knocked, not launched.
        for k in range(1, SUBSTEPS + 1):
            pivot = start + (self.target - start) * (k / SUBSTEPS)
            p.changeConstraint(self._constraint, self._effector_pose(pivot), maxForce=200,
                               physicsClientId=self.client)
            p.stepSimulation(physicsClientId=self.client)
        return self.render() if render else None

    def effector_xy(self) -> np.ndarray:
        pos, _ = p.getBasePositionAndOrientation(self.effector, physicsClientId=self.client)
        return np.array(pos[:2])

    def block_xy(self, color: str) -> np.ndarray:
        pos, _ = p.getBasePositionAndOrientation(self.blocks[color], physicsClientId=self.client)
        return np.array(pos[:2])

    def render(self) -> np.ndarray:
        import cv2

        height, width = IMAGE_HEIGHT // RENDER_SCALE, IMAGE_WIDTH // RENDER_SCALE
        _, _, rgba, _, _ = p.getCameraImage(width, height, self._view, self._proj,
                                            renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                                            physicsClientId=self.client)
        frame = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]
        return cv2.resize(frame, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_LINEAR)

    def project(self, xyz) -> np.ndarray:
        """World point -> (column, row) pixel coordinates in the rendered frame."""
        view = np.array(self._view).reshape(4, 4).T  # pybullet matrices are column-major
        proj = np.array(self._proj).reshape(4, 4).T
        clip = proj @ view @ np.array([*xyz, 1.0])
        ndc = clip[:3] / clip[3]
        return np.array([(ndc[0] + 1) / 2 * IMAGE_WIDTH, (1 - ndc[1]) / 2 * IMAGE_HEIGHT])

    @staticmethod
    def _effector_pose(xy):
        return [float(xy[0]), float(xy[1]), EFFECTOR_HEIGHT / 2 + 0.002]  # just clear of the board


def _sample_separated_points(rng, count, min_distance, margin):
    """Rejection-samples `count` points in the workspace (shrunk by `margin`), pairwise >= `min_distance`."""
    points = []
    while len(points) < count:
        xy = np.array([rng.uniform(WORKSPACE_X[0] + margin, WORKSPACE_X[1] - margin),
                       rng.uniform(WORKSPACE_Y[0] + margin, WORKSPACE_Y[1] - margin)])
        if all(np.linalg.norm(xy - q) >= min_distance for q in points):
            points.append(xy)
    return points


# The lateral offset that lets the effector pass beside a block without touching it.
SIDE_CLEARANCE = EFFECTOR_RADIUS + 0.06


def scripted_waypoint(effector, block, direction, pushing):
    """Where the effector (its commanded target) should head next: around behind the block, then through it."""
    normal = np.array([-direction[1], direction[0]])
    rel = effector - block
    along, lateral = rel @ direction, rel @ normal
    side = 1.0 if lateral >= 0 else -1.0  # pass on the effector's side of the block...
    if not inside_workspace(block + normal * side * SIDE_CLEARANCE):
        side = -side  # ...unless that side is off the workspace, where the clipped target would stall
    if pushing or (along <= -0.05 and abs(lateral) <= 0.01):
        return effector + direction * SCRIPTED_MAX_STEP - normal * lateral, True  # push, re-centring on the block
    if along <= -0.05:
        return block - direction * STANDOFF, False  # behind it: line up
    if abs(lateral) < SIDE_CLEARANCE - 0.005:  # tolerance so reaching the side point counts as beside
        return block + direction * along + normal * side * SIDE_CLEARANCE, False  # in front: step aside first
    return block - direction * STANDOFF + normal * side * SIDE_CLEARANCE, False  # beside: go back past it


def step_toward(target: np.ndarray, waypoint: np.ndarray) -> np.ndarray:
    """The scripted controllers' action toward `waypoint`: the whole way, or `SCRIPTED_MAX_STEP` of it."""
    action = waypoint - target
    norm = np.linalg.norm(action)
    if norm > SCRIPTED_MAX_STEP:
        action *= SCRIPTED_MAX_STEP / norm
    return action


def draw_task(world: TabletopWorld, task_rng) -> tuple[str, str]:
    """A (block colour, direction) whose push stays on the workspace and can be lined up for, from `task_rng`."""
    feasible = [(color, name) for color in BLOCK_COLORS for name in DIRECTIONS
                if push_feasible(world.block_xy(color), name)]
    candidates = feasible or [(c, n) for c in BLOCK_COLORS for n in DIRECTIONS]
    return candidates[task_rng.integers(len(candidates))]


def scripted_episode(seed: int, max_steps: int = 30, episode_id: str | None = None, tasks: int = 1) -> dict:
    """Random layout and task from `seed`, then a scripted push; ends when the push is done or at `max_steps`.

    Each step holds the frame and effector state *before* its action; the last step holds the final
    observation with a zero action, and reward 1.0 there iff the block moved >= SUCCESS_DISTANCE along
    the commanded direction. Besides episode_id, instruction and steps, the result names the task
    ("target_block", "direction") and the block's world (dx, dy) over the episode ("block_displacement").

    `tasks` > 1 chains that many pushes in one episode (long held-out episodes for multi-segment rollouts): when a
    push is done the next task is drawn at the layout it left, and each step's instruction is the task it works
    on; a step that completes a push gets reward 1.0. "instruction" stays the first task's (the episode's text, as
    the Language Table adapter reads it: the first step's); the task fields and "block_displacement" describe the
    last task.
    """
    task_rng = np.random.default_rng([seed, 1])  # independent of the layout stream inside reset()
    with TabletopWorld() as world:
        frame = world.reset(seed)
        color, direction_name = draw_task(world, task_rng)
        direction = np.array(DIRECTIONS[direction_name])
        instruction = INSTRUCTION_TEMPLATES[direction_name].format(color)
        encoded = language_table_format.encode_instruction(instruction)
        block_start = world.block_xy(color)
        pushing, steps, task = False, [], 1
        for t in range(max_steps):
            moved = (world.block_xy(color) - block_start) @ direction
            completed = False  # this step's frame shows a finished push that is not the episode's last
            if moved >= PUSH_DISTANCE and task < tasks and t < max_steps - 1:  # the next push, from this frame
                completed, task = True, task + 1
                color, direction_name = draw_task(world, task_rng)
                direction = np.array(DIRECTIONS[direction_name])
                encoded = language_table_format.encode_instruction(INSTRUCTION_TEMPLATES[direction_name].format(color))
                block_start, pushing, moved = world.block_xy(color), False, 0.0
            last = t == max_steps - 1 or moved >= PUSH_DISTANCE
            action = np.zeros(2)
            noise = task_rng.normal(0.0, ACTION_NOISE, 2)  # drawn every step, so an episode's stream is fixed
            if not last:
                waypoint, pushing = scripted_waypoint(world.target, world.block_xy(color), direction, pushing)
                action = np.clip(step_toward(world.target, waypoint) + noise, -SCRIPTED_MAX_STEP, SCRIPTED_MAX_STEP)
            steps.append({
                "action": action.astype(np.float32),
                "is_first": t == 0, "is_last": last, "is_terminal": last,
                "reward": np.float32(1.0 if completed or (last and moved >= SUCCESS_DISTANCE) else 0.0),
                "observation": {
                    "rgb": frame,
                    "instruction": encoded,
                    "effector_translation": world.effector_xy().astype(np.float32),
                    "effector_target_translation": world.target.astype(np.float32),
                },
            })
            if last:
                break
            frame = world.step(action)
        displacement = world.block_xy(color) - block_start
    return {"episode_id": episode_id or f"tabletop_{seed}", "instruction": instruction, "steps": steps,
            "target_block": color, "direction": direction_name, "block_displacement": displacement}


def episode_seed(seed: int, index: int) -> int:
    """The seed of episode `index` in a sample written with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _episode_example(job: tuple[int, int, int, int]) -> tuple[str, dict]:
    seed, index, max_steps, tasks = job
    episode_id = f"tabletop_{seed}_{index:05d}"
    episode = scripted_episode(episode_seed(seed, index), max_steps, episode_id=episode_id, tasks=tasks)
    return episode_id, {"episode_id": episode_id, "steps": episode["steps"]}


def instruction_corpus() -> list[str]:
    """Every instruction of the world, with its dataset name as domain prefix (as `unisim convert` writes them):
    the vocabulary of the tiny stand-in text encoder (`samples.tiny_t5`)."""
    return [f"{SAMPLE_NAME}: " + template.format(color) for template in INSTRUCTION_TEMPLATES.values()
            for color in BLOCK_COLORS]


def write_sample(data_dir: str, num_episodes: int = 8, seed: int = 0, max_steps: int = 30,
                 name: str = SAMPLE_NAME, num_shards: int | None = None, workers: int = 1, tasks: int = 1) -> str:
    """Simulates `num_episodes` scripted episodes and writes them in the Language Table RLDS format.

    `workers` > 1 simulates episodes in that many processes (each episode depends on its seed only, so the
    written bytes are the same for any count); TFDS encodes and writes them in this one. `tasks` > 1 chains pushes
    in each episode (`scripted_episode`)."""
    if tasks < 1:
        raise ValueError(f"tasks per episode must be at least 1, got {tasks}")
    jobs = [(seed, i, max_steps, tasks) for i in range(num_episodes)]

    def make_examples():
        if workers <= 1:
            yield from map(_episode_example, jobs)
            return
        import multiprocessing

        # spawn: a fork of a process that has started TensorFlow's threads is not safe.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(_episode_example, jobs)

    return language_table_format.write(data_dir, make_examples, name=name, num_shards=num_shards)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="TFDS data_dir to write into")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1, help="processes simulating episodes")
    parser.add_argument("--tasks", type=int, default=1, help="pushes chained in each episode")
    args = parser.parse_args(argv)
    print(write_sample(args.output, args.episodes, args.seed, args.max_steps, workers=args.workers, tasks=args.tasks))


if __name__ == "__main__":
    main()
