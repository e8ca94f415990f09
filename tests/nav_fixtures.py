"""Navigation fixtures in the official layouts: Room-to-Room + Matterport3D skyboxes, with planted bad items."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

# A level vision camera (looking along +z, y down) facing world +y, as MatterSim's pano poses are.
LEVEL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float64)
PANOS = {f"p{i}": f"{i:x}" * 32 for i in range(4)}  # 32-hex viewpoint ids
UNKNOWN = "f" * 32

# scanA: one good path (3 instructions), one through an unknown viewpoint, one through a pano lacking a face;
# scanB has no connectivity file; one entry is malformed. Rotation episodes: 4 directions per pano on a path.
R2R_EXPECT = dict(
    episodes=3 + 3 * 4,  # path 1's instructions; p0, p1, p2 × 4 directions
    read_rejections={"unknown_viewpoint": 3, "missing_skybox": 3 + 4, "missing_connectivity": 3 + 2 * 4,
                     "malformed_annotation": 1},
    records=15,
    rejected_reasons={"unknown_viewpoint": 3, "missing_skybox": 7, "missing_connectivity": 11,
                      "malformed_annotation": 1})


def pose(yaw_degrees: float, x: float, y: float, z: float = 1.5) -> list[float]:
    c, s = np.cos(np.radians(yaw_degrees)), np.sin(np.radians(yaw_degrees))
    matrix = np.eye(4)
    matrix[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ LEVEL
    matrix[:3, 3] = (x, y, z)
    return [float(v) for v in matrix.reshape(-1)]  # row-major, translation at 3, 7, 11


def write_skybox(folder: str, pano: str, seed: int, skip: tuple[int, ...] = (), size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    for face in range(6):
        if face in skip:
            continue
        image = np.full((size, size, 3), 40 * face + 20, np.uint8)
        image[rng.integers(0, size, 40), rng.integers(0, size, 40)] = 255  # texture, so views differ
        cv2.imwrite(os.path.join(folder, f"{pano}_skybox{face}_sami.jpg"), image)


def write_r2r(root: str) -> str:
    p = PANOS
    tasks = os.path.join(root, "tasks", "R2R", "data")
    os.makedirs(tasks, exist_ok=True)
    os.makedirs(os.path.join(root, "connectivity"), exist_ok=True)
    skyboxes = os.path.join(root, "data", "v1", "scans", "scanA", "matterport_skybox_images")
    os.makedirs(skyboxes, exist_ok=True)
    positions = {"p0": (0.0, 0.0), "p1": (0.0, 2.0), "p2": (2.0, 2.0), "p3": (2.0, 4.0)}
    graph = [{"image_id": p[name], "pose": pose(17.0 * i, *positions[name]), "included": True,
              "visible": [True] * 4, "unobstructed": [True] * 4, "height": 1.5} for i, name in enumerate(p)]
    with open(os.path.join(root, "connectivity", "scanA_connectivity.json"), "w") as f:
        json.dump(graph, f)
    with open(os.path.join(root, "connectivity", "scans.txt"), "w") as f:
        f.write("scanA\nscanB\n")
    for i, name in enumerate(p):
        write_skybox(skyboxes, p[name], i, skip=(3,) if name == "p3" else ())
    instructions = lambda n: [f"Walk {n} and stop.", f"Go {n}, then wait.", f"Head {n}."]  # noqa: E731
    entries = [
        {"distance": 4.0, "scan": "scanA", "path_id": 1, "path": [p["p0"], p["p1"], p["p2"]], "heading": 0.5,
         "instructions": instructions("to the kitchen")},
        {"distance": 2.0, "scan": "scanA", "path_id": 2, "path": [p["p0"], UNKNOWN], "heading": 1.0,
         "instructions": instructions("nowhere")},
        {"distance": 2.0, "scan": "scanA", "path_id": 3, "path": [p["p1"], p["p3"]], "heading": 2.0,
         "instructions": instructions("upstairs")},
        {"scan": "scanA", "path_id": 4},
        {"distance": 3.0, "scan": "scanB", "path_id": 5, "path": ["a" * 32, "b" * 32], "heading": 0.0,
         "instructions": instructions("outside")},
    ]
    with open(os.path.join(tasks, "R2R_train.json"), "w") as f:
        json.dump(entries, f)
    return root


HABITAT_EXPECT = dict(
    episodes=3, read_rejections={"unknown_action": 1, "missing_observations": 1, "observation_count_mismatch": 1,
                                 "malformed_annotation": 1},
    records=2, rejected_reasons={"unknown_action": 1, "missing_observations": 1, "observation_count_mismatch": 1,
                                 "malformed_annotation": 1, "undecodable_image": 1})


def write_habitat(root: str) -> str:
    """ObjectNav HM3D v1 demonstrations (habitat-web style `reference_replay`) and our rendered-observation layout,
    under a habitat root (`data/datasets/objectnav/hm3d/v1`)."""
    import gzip

    base = os.path.join(root, "data", "datasets", "objectnav", "hm3d", "v1", "train")
    os.makedirs(os.path.join(base, "content"), exist_ok=True)

    def dump(path, data):
        with gzip.open(path, "wt") as f:
            json.dump(data, f)

    dump(os.path.join(base, "train.json.gz"), {"episodes": [], "category_to_task_category_id": {
        c: i for i, c in enumerate(["chair", "bed", "plant", "toilet", "tv_monitor", "sofa"])}})

    def episode(episode_id, category, actions, observations, corrupt=None, scene="sceneA"):
        replay = [{"action": "STOP", "agent_state": {"position": [0, 0, 0], "rotation": [0, 0, 0, 1]}}]
        replay += [{"action": a, "agent_state": {"position": [0.25 * t, 0, 0], "rotation": [0, 0, 0, 1]}}
                   for t, a in enumerate(actions, 1)]
        folder = os.path.join(base, "rgb", scene, str(episode_id))
        for t in range(observations):
            os.makedirs(folder, exist_ok=True)
            image = np.full((48, 64, 3), (30 * t) % 255, np.uint8)
            image[:, : 4 + 4 * t] = (0, 180, 0)
            data = cv2.imencode(".jpg", image)[1].tobytes()
            if t == corrupt:
                data = data[:4] + bytes(200) + data[-2:]
            with open(os.path.join(folder, f"{t:04d}.jpg"), "wb") as f:
                f.write(data)
        return {"episode_id": str(episode_id), "scene_id": f"hm3d/{scene}.basis.glb", "object_category": category,
                "start_position": [0, 0, 0], "start_rotation": [0, 0, 0, 1], "goals": [],
                "info": {"geodesic_distance": 2.0}, "reference_replay": replay}

    forward = ["MOVE_FORWARD", "TURN_LEFT", "MOVE_FORWARD", "STOP"]
    scene_a = [episode(0, "chair", forward, 5),
               episode(1, "tv_monitor", forward + ["STOP"], 6, corrupt=2),
               episode(2, "bed", ["MOVE_FORWARD", "FLY"], 3),
               episode(3, "plant", forward, 0),
               episode(4, "sofa", ["MOVE_FORWARD", "LOOK_UP", "STOP"], 3),
               {"episode_id": "5", "scene_id": "hm3d/sceneA.basis.glb"}]
    dump(os.path.join(base, "content", "sceneA.json.gz"), {"goals_by_category": {}, "episodes": scene_a})
    scene_b = [episode(6, "toilet", ["TURN_RIGHT", "LOOK_DOWN", "LOOK_UP"] + forward, 8, scene="sceneB")]
    dump(os.path.join(base, "content", "sceneB.json.gz"), {"goals_by_category": {}, "episodes": scene_b})
    return root
