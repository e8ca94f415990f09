"""Where the effector and the blocks are, read from a frame by colour — the only way an agent learning inside the
learned simulator knows anything about its world (rewards from generated frames), and the same reading it gets of a
pybullet frame. Positions are world metres on the board (`samples.tabletop_spec.pixel_to_world`), so one success
rule (`agents.tasks.succeeded`) serves frames and physics state alike.

The effector is found by the simulator's own detector (`simulator.evaluation.evaluate.effector_centroid`, magenta).
A block is the largest connected blob of pixels whose colour lies along the line from the board's grey toward the
block's colour (the projection on that line, less twice the distance off it: a pixel half block, half board still
counts, a red-and-magenta mixture at the effector's rim does not) and scoring at least `MIN_PIXEL_SCORE`, its
centroid weighted by that score. The floor is for generated frames: the faint tinted rings a rollout leaves where the
effector passed score about 0.2 over many pixels, and once a block had faded from a generated frame, such a ring was
the largest blob and read as the block moved (every hindsight label of the first planner run was one). On pybullet's
frames at 24×40 (40 episodes, every 4th frame) the floor loses no block and moves none by more than 0.8 cm.
"""

from __future__ import annotations

import numpy as np

from unisim.agents.tasks import Positions
from unisim.samples.tabletop_spec import BLOCK_COLORS, BLOCK_HALF, BOARD_RGB, EFFECTOR_HEIGHT, pixel_to_world
from unisim.simulator.evaluation.evaluate import effector_centroid

MIN_BLOCK_MASS = 0.4  # a blob's summed score, in pixels of pure block colour: less is noise, not a block
MIN_PIXEL_SCORE = 0.3  # a pixel scoring less belongs to no block (module docstring)
OFF_LINE_WEIGHT = 2.0


def colour_score(frame: np.ndarray, rgb) -> np.ndarray:
    """[h, w] in [0, 1]: how much of each pixel is a surface of colour `rgb` on the grey board."""
    board = np.asarray(BOARD_RGB, np.float32)
    axis = np.asarray(rgb, np.float32) - board
    length = float(np.linalg.norm(axis))
    d = frame.astype(np.float32) - board
    along = d @ (axis / length)
    off = np.linalg.norm(d - along[..., None] * (axis / length), axis=-1)
    return np.clip((along - OFF_LINE_WEIGHT * off) / length, 0.0, 1.0)


def blob_centroid(score: np.ndarray, min_mass: float, min_pixel: float = MIN_PIXEL_SCORE) -> np.ndarray | None:
    """(row, col) of the largest-mass connected blob of pixels scoring at least `min_pixel`, weighted by the score;
    None below `min_mass`."""
    import cv2

    score = np.where(score >= min_pixel, score, 0.0)
    count, labels = cv2.connectedComponents((score > 0).astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    masses = np.bincount(labels.ravel(), weights=score.ravel(), minlength=count)[1:]
    blob = 1 + int(np.argmax(masses))
    if masses[blob - 1] < min_mass:
        return None
    weights = np.where(labels == blob, score, 0.0)
    rows, cols = np.mgrid[: score.shape[0], : score.shape[1]]
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def positions(frame: np.ndarray) -> Positions:
    """The effector's and every block's position in `frame` (uint8 RGB [h, w, 3], any size), world metres."""
    size = frame.shape[:2]
    effector = effector_centroid(frame)
    blocks = {}
    for name, rgb in BLOCK_COLORS.items():
        found = blob_centroid(colour_score(frame, rgb), MIN_BLOCK_MASS)
        blocks[name] = None if found is None else np.array(pixel_to_world(found, size, height=2 * BLOCK_HALF))
    return Positions(effector=None if effector is None else np.array(pixel_to_world(effector, size, EFFECTOR_HEIGHT)),
                     blocks=blocks)
