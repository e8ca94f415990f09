"""The tabletop world's published facts, without its physics: sizes, colours, directions, instructions, the task
thresholds and where the camera looks. `samples/tabletop.py` (the pybullet world) is built from them; code that must
not touch the physics (an agent learning inside the learned simulator, `agents/`) reads them here, as a reward
designer reads a task's description. Importing this module imports no pybullet.
"""

from __future__ import annotations

import math

import numpy as np

IMAGE_HEIGHT, IMAGE_WIDTH = 360, 640
RENDER_SCALE = 2  # rendered at IMAGE_{HEIGHT,WIDTH} / RENDER_SCALE, then upscaled (see samples/tabletop.py)
WORKSPACE_X = (0.15, 0.6)
WORKSPACE_Y = (-0.3048, 0.3048)
CONTROL_HZ, PHYSICS_HZ = 10, 240
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ
MAX_ACTION = 0.1  # per axis, as in the release's action space
SCRIPTED_MAX_STEP = 0.03  # metres per control step for the scripted policy (per axis, noise included)
ACTION_NOISE = 0.01  # std (metres, per axis) of the Gaussian noise on each scripted action

EFFECTOR_RGB = (255, 0, 255)  # magenta: used by nothing else, so a frame can be segmented for the effector
BLOCK_COLORS = {"red": (230, 25, 25), "blue": (25, 60, 235), "green": (20, 175, 40), "yellow": (245, 215, 20)}
BOARD_RGB = (110, 110, 115)  # neutral grey: zero saturation, far from every block hue and from magenta
EFFECTOR_RADIUS, EFFECTOR_HEIGHT = 0.045, 0.06
BLOCK_HALF = 0.02
# Image direction -> unit vector in world (x, y); samples/tabletop.py's docstring says why.
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}
INSTRUCTION_TEMPLATES = {"left": "push the {} block to the left", "right": "push the {} block to the right",
                         "up": "push the {} block up", "down": "push the {} block down"}
SAMPLE_NAME = "language_table_tabletop_sim"  # the TFDS dataset name of the written sample
PUSH_DISTANCE = 0.08  # how far the scripted policy pushes
# Effector-to-block distance from which a push starts (contact is at the radius + 2 to 2.8 cm).
STANDOFF = EFFECTOR_RADIUS + 0.05
SUCCESS_DISTANCE = 0.05  # displacement along the commanded direction that earns reward 1.0

# Straight down from 1.2 m above the workspace's centre, image up = -x; the frame's height spans x in
# [0.14, 0.61] (the workspace with 1 cm to spare) and its width y in [-0.42, 0.42].
CAMERA_EYE, CAMERA_TARGET, CAMERA_UP = (0.375, 0.0, 1.2), (0.375, 0.0, 0.0), (-1.0, 0.0, 0.0)
FRAME_HALF_HEIGHT = 0.235  # metres of board from the frame's centre to its top edge
CAMERA_FOV_DEG = 2 * math.degrees(math.atan(FRAME_HALF_HEIGHT / CAMERA_EYE[2]))
# What the whole frame shows of the board (world x from the top row to the bottom, y from the left column to the
# right), whatever the frame's pixel size: a frame resized to h × w pixels maps pixel centres linearly onto these.
FRAME_X = (CAMERA_TARGET[0] - FRAME_HALF_HEIGHT, CAMERA_TARGET[0] + FRAME_HALF_HEIGHT)
FRAME_Y = (-FRAME_HALF_HEIGHT * IMAGE_WIDTH / IMAGE_HEIGHT, FRAME_HALF_HEIGHT * IMAGE_WIDTH / IMAGE_HEIGHT)


def pixel_to_world(row_col, size: tuple[int, int], height: float = 0.0) -> tuple[float, float]:
    """(row, col) of a frame of `size` (h, w), pixel centres at integers → world (x, y), metres, of a point
    `height` above the board (the camera's perspective shows a block's top, 4 cm up, 3.4 % further from the
    frame's centre than the board point beneath it)."""
    row, col = row_col
    x = FRAME_X[0] + (row + 0.5) / size[0] * (FRAME_X[1] - FRAME_X[0])
    y = FRAME_Y[0] + (col + 0.5) / size[1] * (FRAME_Y[1] - FRAME_Y[0])
    scale = (CAMERA_EYE[2] - height) / CAMERA_EYE[2]
    return CAMERA_TARGET[0] + (x - CAMERA_TARGET[0]) * scale, CAMERA_TARGET[1] + (y - CAMERA_TARGET[1]) * scale


def inside_workspace(xy, margin: float = 0.0) -> bool:
    return (WORKSPACE_X[0] + margin <= xy[0] <= WORKSPACE_X[1] - margin
            and WORKSPACE_Y[0] + margin <= xy[1] <= WORKSPACE_Y[1] - margin)


def push_feasible(block_xy, direction: str) -> bool:
    """Whether a push of a block at `block_xy` (world metres) toward `direction` stays on the workspace and can be
    lined up for (the effector fits behind the block): the rule the world draws its tasks by, and the one a planner's
    data draws instructions by from detected positions."""
    vector = np.asarray(DIRECTIONS[direction], np.float64)
    block = np.asarray(block_xy, np.float64)
    return inside_workspace(block + vector * PUSH_DISTANCE, 0.03) and inside_workspace(block - vector * STANDOFF)
