"""The cube-map → perspective projection (adapters/panorama.py) on synthetic skyboxes: faces and markers land where
MatterSim's geometry says."""

import numpy as np
import pytest

from unisim.adapters import panorama as pano

SIZE = 64
COLOURS = {i: np.array(c, np.uint8) for i, c in enumerate(
    [(250, 250, 250), (200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (20, 20, 20)])}
MARKER = np.array([255, 0, 255], np.uint8)
# A level vision camera (looking along +z, y down) whose forward axis is world +y: MatterSim's pano poses look so.
LEVEL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float64)


def pose(yaw_degrees: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = pano.rotation_z(np.radians(yaw_degrees)) @ LEVEL
    matrix[:3, 3] = (1.0, 2.0, 1.5)  # translation does not move a skybox
    return matrix


def skybox(marker_face: int | None = None, row: int = 0, col: int = 0):
    faces = {i: np.tile(COLOURS[i], (SIZE, SIZE, 1)) for i in range(6)}
    if marker_face is not None:
        faces[marker_face][row : row + 4, col : col + 4] = MARKER
    return lambda i: faces[i]


def view(skybox_fn, yaw, heading, elevation=0.0, size=(48, 64), vfov=np.radians(60)):
    return pano.render_view(skybox_fn, pose(yaw), np.radians(heading), np.radians(elevation), *size, vfov)


def centre(image):
    return tuple(int(v) for v in image[image.shape[0] // 2, image.shape[1] // 2])


@pytest.mark.parametrize("yaw", [0.0, 90.0, 37.0])
def test_side_faces_go_round_clockwise_and_up_and_down_are_faces_0_and_5(yaw):
    # For a pano yawed by φ, its forward face (skybox3) sits at world heading −φ; turning right visits 2, 1, 4.
    for offset, face in ((0, 3), (90, 2), (180, 1), (270, 4)):
        assert centre(view(skybox(), yaw, offset - yaw)) == tuple(COLOURS[face]), (yaw, offset)
    assert centre(view(skybox(), yaw, 10, elevation=85)) == tuple(COLOURS[0])
    assert centre(view(skybox(), yaw, 10, elevation=-85)) == tuple(COLOURS[5])


def _direction_of_texel(face_image: int, row: float, col: float) -> np.ndarray:
    """Model-space direction of a texel: OpenGL's cube-map table solved for the direction (written out on its own,
    not through the module's lookup)."""
    s, t = 2 * (col + 0.5) / SIZE - 1, 2 * (row + 0.5) / SIZE - 1
    gl_face = pano.FACE_TO_SKYBOX.index(face_image)
    return np.array({0: (1, -t, -s), 1: (-1, -t, s), 2: (s, 1, t), 3: (s, -1, -t), 4: (s, -t, 1),
                     5: (-s, -t, -1)}[gl_face], np.float64)


@pytest.mark.parametrize("face,row,col", [(3, 10, 12), (2, 40, 50), (1, 30, 5), (4, 8, 56), (0, 20, 44), (5, 50, 9)])
def test_a_marker_is_centred_when_the_camera_looks_at_it_and_moves_against_a_turn(face, row, col):
    yaw = 23.0
    model = _direction_of_texel(face, row + 1.5, col + 1.5)  # the 4×4 marker's centre
    world = pose(yaw)[:3, :3] @ pano.MODEL_FROM_POSE @ model
    heading, elevation = pano.heading_elevation(world)
    image = view(skybox(face, row, col), yaw, np.degrees(heading), np.degrees(elevation), size=(49, 65))
    ys, xs = np.nonzero((image == MARKER).all(axis=-1))
    assert len(xs) and abs(xs.mean() - 32) <= 1.5 and abs(ys.mean() - 24) <= 1.5
    if abs(np.degrees(elevation)) < 60:  # turning right moves the scene left; looking up moves it down
        right = view(skybox(face, row, col), yaw, np.degrees(heading) + 10, np.degrees(elevation), size=(49, 65))
        up = view(skybox(face, row, col), yaw, np.degrees(heading), np.degrees(elevation) + 10, size=(49, 65))
        assert np.nonzero((right == MARKER).all(axis=-1))[1].mean() < xs.mean() - 3
        assert np.nonzero((up == MARKER).all(axis=-1))[0].mean() > ys.mean() + 3


def test_heading_convention_matches_mattersim():
    # heading 0 looks along world +y, heading 90° along +x (MatterSim's populateNavigable); elevation looks up.
    centre_ray = lambda h, e: pano.world_rays(np.radians(h), np.radians(e), 1, 1, 1.0)[0, 0]  # noqa: E731
    np.testing.assert_allclose(centre_ray(0, 0), [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(centre_ray(90, 0), [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(centre_ray(0, 90), [0, 0, 1], atol=1e-9)
    assert pano.heading_elevation(np.array([1.0, 0, 0])) == pytest.approx((np.pi / 2, 0.0))


def test_only_the_faces_a_view_sees_are_needed():
    assert pano.faces_needed(pose(0), 0.0, 0.0, 48, 64, np.radians(60)) == [3]
    assert pano.faces_needed(pose(0), np.radians(45), 0.0, 48, 64, np.radians(60)) == [2, 3]
