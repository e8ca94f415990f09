"""BridgeData V2 release formats, for sample data and fixtures: the raw folders and the RLDS `bridge_dataset`.

Raw trajectory (`…/<date>/raw/traj_group<g>/traj<i>/`): `images0/im_{t}.jpg` 480×640 for t = 0…T,
`obs_dict.pkl` ({"full_state": [T+1, 7], "time_stamp": [T+1], …}), `policy_out.pkl` (T dicts {"actions": (7,), …}
or T arrays), `lang.txt` ("instruction\\nconfidence: 1\\n"), `agent_data.pkl`. Pickles are written the way
numpy 1.x wrote them (`numpy.core.multiarray._reconstruct`, protocol 2), like the real release.

RLDS `bridge_dataset/1.0.0`: steps{observation{image_0..3 (480,640,3) JPEG, state f32[7]}, action f32[7], discount,
reward, is_first, is_last, is_terminal, language_instruction, language_embedding f32[512]}, episode_metadata{file_path,
has_image_0..3, has_language}.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from unisim.samples.rlds_writer import Examples, write_tfds_dataset

NAME, VERSION = "bridge_dataset", "1.0.0"
IMAGE_SHAPE = (480, 640, 3)


def numpy1_pickle(value) -> bytes:
    """`pickle.dumps` as numpy 1.x wrote it: protocol 2 with `numpy.core.*` module names."""
    return pickle.dumps(value, protocol=2).replace(b"numpy._core.", b"numpy.core.")


def write_raw_trajectory(traj_dir: str, images: Sequence[np.ndarray | bytes | None], actions: np.ndarray,
                         instruction: str | None, actions_as_dicts: bool = True,
                         policy_out: bytes | None = None) -> str:
    """One raw trajectory. `images[t]` is an RGB array, encoded bytes, or None (file left out);
    `instruction` None leaves lang.txt out (several lines: several instructions); `policy_out` replaces the pickled
    actions (for planted defects)."""
    os.makedirs(os.path.join(traj_dir, "images0"), exist_ok=True)
    for t, image in enumerate(images):
        if image is None:
            continue
        data = (image if isinstance(image, bytes)
                else cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes())
        with open(os.path.join(traj_dir, "images0", f"im_{t}.jpg"), "wb") as f:
            f.write(data)
    steps = len(images)
    state = {"full_state": np.zeros((steps, 7)), "state": np.zeros((steps, 7)), "qpos": np.zeros((steps, 6)),
             "time_stamp": np.arange(steps) * 0.2, "eef_transform": np.tile(np.eye(4), (steps, 1, 1)),
             "env_done": np.zeros(steps, bool), "t_get_obs": np.zeros(steps)}
    if policy_out is None:
        rows = [np.asarray(a, np.float64) for a in actions]
        entries = [{"actions": a, "new_robot_transform": np.eye(4), "delta_robot_transform": np.eye(4),
                    "policy_type": "VRTeleopPolicy"} for a in rows] if actions_as_dicts else rows
        policy_out = numpy1_pickle(entries)
    files = {"obs_dict.pkl": numpy1_pickle(state), "policy_out.pkl": policy_out,
             "agent_data.pkl": numpy1_pickle({"traj_ok": True, "camera_info": [{"serial": "0"}]})}
    if instruction is not None:
        files["lang.txt"] = f"{instruction}\nconfidence: 1\n".encode("utf-8")
    for name, data in files.items():
        with open(os.path.join(traj_dir, name), "wb") as f:
            f.write(data)
    return traj_dir


def features() -> tfds.features.FeaturesDict:
    flag = lambda: tfds.features.Scalar(dtype=np.bool_)  # noqa: E731
    image = lambda: tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg")  # noqa: E731
    return tfds.features.FeaturesDict({
        "episode_metadata": tfds.features.FeaturesDict({
            "file_path": tfds.features.Text(), "has_language": flag(),
            **{f"has_image_{i}": flag() for i in range(4)}}),
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict({
                **{f"image_{i}": image() for i in range(4)},
                "state": tfds.features.Tensor(shape=(7,), dtype=np.float32)}),
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "discount": tfds.features.Scalar(dtype=np.float32),
            "reward": tfds.features.Scalar(dtype=np.float32),
            "is_first": flag(), "is_last": flag(), "is_terminal": flag(),
            "language_instruction": tfds.features.Text(),
            "language_embedding": tfds.features.Tensor(shape=(512,), dtype=np.float32),
        }),
    })


def rlds_episode(images: Sequence, actions: np.ndarray, instruction: str, file_path: str) -> dict:
    """One episode; `images[t]` is the step's image_0 (an array, or a file-like object of encoded bytes)."""
    blank = np.zeros(IMAGE_SHAPE, np.uint8)  # cameras 1–3 absent, as in most of the release
    steps = len(images)
    return {
        "episode_metadata": {"file_path": file_path, "has_language": bool(instruction), "has_image_0": True,
                             "has_image_1": False, "has_image_2": False, "has_image_3": False},
        "steps": [{
            "observation": {"image_0": images[t], "image_1": blank, "image_2": blank, "image_3": blank,
                            "state": np.zeros(7, np.float32)},
            "action": np.asarray(actions[t], np.float32), "discount": np.float32(1),
            "reward": np.float32(t == steps - 1),
            "is_first": t == 0, "is_last": t == steps - 1, "is_terminal": t == steps - 1,
            "language_instruction": instruction, "language_embedding": np.zeros(512, np.float32),
        } for t in range(steps)],
    }


def write_rlds(data_dir: str, make_examples: Callable[[], Examples], num_shards: int | None = None) -> str:
    """Writes a `train` split; returns `<data_dir>/bridge_dataset/1.0.0`."""
    return write_tfds_dataset(data_dir, NAME, VERSION, features(), {"train": make_examples}, num_shards=num_shards,
                              description="BridgeData V2 format (RLDS)")
