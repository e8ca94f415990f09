"""Perspective views cut from Matterport3D skyboxes, with the geometry of MatterSim (Anderson et al. 2018), the
simulator R2R was collected in, so that a heading here is the heading in R2R's files.

Conventions, taken from MatterSim's renderer (`src/lib/MatterSim.cpp`, `src/lib/vertex.sh`):
- World: z up, metres. Heading is measured clockwise from world +y (heading π/2 looks along +x); elevation is
  positive upward. A camera at (heading h, elevation e) has, in OpenGL camera coordinates (x right, y up, looking
  along −z), world rays `Rz(−h) · Rx(π/2 + e) · ray_camera`.
- A viewpoint's `pose` (connectivity file, row-major 4×4, camera-to-world) is a vision camera (looking along +z,
  y down). MatterSim renders the skybox cube with model matrix `rot = R_pose · diag(1, −1, −1)` and looks the
  texture up with the cube's model-space coordinate, so a world ray w samples the cube map at d = rotᵀ · w.
- Cube faces: +x = skybox2, −x = skybox4, +y = skybox0 (up), −y = skybox5 (down), +z = skybox1, −z = skybox3, and
  OpenGL's cube-map rules pick the face by the major axis of d and the texel (s, t) within it; t = 0 is the first
  row given to OpenGL, which is the top row of the JPEG as OpenCV reads it. For a level pano with an identity yaw
  this puts heading 0 on skybox3, 90° on skybox2, 180° on skybox1 and 270° on skybox4 (`tests/test_panorama.py`
  checks faces and markers against this geometry).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# cube-map face (OpenGL order +x, −x, +y, −y, +z, −z) → skybox image index
FACE_TO_SKYBOX = (2, 4, 0, 5, 1, 3)
MODEL_FROM_POSE = np.diag([1.0, -1.0, -1.0])  # MatterSim's extra 180° about x (vision → OpenGL camera)


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def camera_rays(height: int, width: int, vfov: float) -> np.ndarray:
    """[H, W, 3] ray directions in OpenGL camera coordinates through pixel centres; row 0 is the top."""
    tan = np.tan(vfov / 2)
    x = (2 * (np.arange(width) + 0.5) / width - 1) * tan * width / height
    y = (1 - 2 * (np.arange(height) + 0.5) / height) * tan
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy, -np.ones_like(xx)], axis=-1)


def world_rays(heading: float, elevation: float, height: int, width: int, vfov: float) -> np.ndarray:
    return camera_rays(height, width, vfov) @ (rotation_z(-heading) @ rotation_x(np.pi / 2 + elevation)).T


def heading_elevation(direction: np.ndarray) -> tuple[float, float]:
    """The (heading, elevation) that looks along a world direction."""
    x, y, z = direction
    return float(np.arctan2(x, y) % (2 * np.pi)), float(np.arctan2(z, np.hypot(x, y)))


def cube_coordinates(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenGL cube-map lookup of model-space directions [..., 3] → (face 0..5, s, t) with s, t in [0, 1]."""
    ax, ay, az = np.abs(d[..., 0]), np.abs(d[..., 1]), np.abs(d[..., 2])
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    major_x = (ax >= ay) & (ax >= az)
    major_y = ~major_x & (ay >= az)
    face = np.where(major_x, np.where(x > 0, 0, 1), np.where(major_y, np.where(y > 0, 2, 3), np.where(z > 0, 4, 5)))
    # (sc, tc) per face, from the OpenGL specification's cube-map table
    sc = np.select([face == 0, face == 1, face == 2, face == 3, face == 4], [-z, z, x, x, x], -x)
    tc = np.select([face == 0, face == 1, face == 2, face == 3, face == 4], [-y, -y, z, -z, -y], -y)
    ma = np.select([major_x, major_y], [ax, ay], az)
    return face, (sc / ma + 1) / 2, (tc / ma + 1) / 2


def model_from_world(pose: np.ndarray) -> np.ndarray:
    """The 3×3 map from world directions to the cube's model space, for a viewpoint's 4×4 pose."""
    return (np.asarray(pose, np.float64)[:3, :3] @ MODEL_FROM_POSE).T


def faces_needed(pose: np.ndarray, heading: float, elevation: float, height: int, width: int,
                 vfov: float) -> list[int]:
    """Skybox image indices a view samples (decode only these)."""
    face, _, _ = cube_coordinates(world_rays(heading, elevation, height, width, vfov) @ model_from_world(pose).T)
    return sorted(FACE_TO_SKYBOX[f] for f in np.unique(face))


def render_view(skybox: Callable[[int], np.ndarray], pose: np.ndarray, heading: float, elevation: float,
                height: int, width: int, vfov: float) -> np.ndarray:
    """An RGB view [height, width, 3] of the skybox `skybox(i)` (i = 0..5, square RGB faces) seen from a camera at
    `heading`/`elevation` (radians, world frame) with vertical field of view `vfov`."""
    face, s, t = cube_coordinates(world_rays(heading, elevation, height, width, vfov) @ model_from_world(pose).T)
    out = np.zeros((height, width, 3), np.uint8)
    for cube_face in np.unique(face):
        image = skybox(FACE_TO_SKYBOX[cube_face])
        size = image.shape[0]
        mask = face == cube_face
        map_x = (s * size - 0.5).astype(np.float32)  # texel centres at (i + 0.5) / size
        map_y = (t * size - 0.5).astype(np.float32)
        sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[mask] = sampled[mask]
    return out
