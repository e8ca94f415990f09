"""The RT-1 release format: Open X-Embodiment `fractal20220817_data/0.1.0` (RLDS), for sample data and fixtures.

Step features as released: `action{world_vector[3], rotation_delta[3], gripper_closedness_action[1],
base_displacement_vector[2], base_displacement_vertical_rotation[1], terminate_episode int32[3] one-hot}`,
`observation{image uint8[256,320,3] JPEG, natural_language_instruction, natural_language_embedding f32[512], and
robot-state tensors}`, `reward`, `is_first`, `is_last`, `is_terminal`; top-level `aspects` and `attributes`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from unisim.samples.rlds_writer import Examples, write_tfds_dataset

NAME, VERSION = "fractal20220817_data", "0.1.0"
IMAGE_SHAPE = (256, 320, 3)
ACTION_SHAPES = {"world_vector": (3,), "rotation_delta": (3,), "gripper_closedness_action": (1,),
                 "base_displacement_vector": (2,), "base_displacement_vertical_rotation": (1,)}
STATE_SHAPES = {"base_pose_tool_reached": (7,), "gripper_closed": (1,), "gripper_closedness_commanded": (1,),
                "height_to_bottom": (1,), "orientation_box": (2, 3), "orientation_start": (4,),
                "robot_orientation_positions_box": (3, 3), "rotation_delta_to_go": (3,), "src_rotation": (4,),
                "vector_to_go": (3,), "workspace_bounds": (3, 3)}


def _f32(shape) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=shape, dtype=np.float32)


def features() -> tfds.features.FeaturesDict:
    flag = lambda: tfds.features.Scalar(dtype=np.bool_)  # noqa: E731
    return tfds.features.FeaturesDict({
        "aspects": tfds.features.FeaturesDict({"already_success": flag(), "success": flag(), "undesirable": flag(),
                                               "feasible": flag(), "has_aspects": flag()}),
        "attributes": tfds.features.FeaturesDict({"collection_mode": tfds.features.Scalar(dtype=np.int32),
                                                  "collection_mode_name": tfds.features.Text(),
                                                  "data_type": tfds.features.Scalar(dtype=np.int32),
                                                  "data_type_name": tfds.features.Text(),
                                                  "env": tfds.features.Scalar(dtype=np.int32),
                                                  "env_name": tfds.features.Text(),
                                                  "location": tfds.features.Scalar(dtype=np.int32),
                                                  "location_name": tfds.features.Text(),
                                                  "objects_family": tfds.features.Scalar(dtype=np.int32),
                                                  "objects_family_name": tfds.features.Text(),
                                                  "task_family": tfds.features.Scalar(dtype=np.int32),
                                                  "task_family_name": tfds.features.Text()}),
        "steps": tfds.features.Dataset({
            "action": tfds.features.FeaturesDict({
                **{k: _f32(s) for k, s in ACTION_SHAPES.items()},
                "terminate_episode": tfds.features.Tensor(shape=(3,), dtype=np.int32)}),
            "is_first": flag(), "is_last": flag(), "is_terminal": flag(),
            "reward": tfds.features.Scalar(dtype=np.float32),
            "observation": tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg"),
                "natural_language_instruction": tfds.features.Text(),
                "natural_language_embedding": _f32((512,)),
                **{k: _f32(s) for k, s in STATE_SHAPES.items()}}),
        }),
    })


def step(image, instruction: str, action: dict[str, np.ndarray], t: int, steps: int) -> dict:
    """One step with zero robot state; `action` holds the continuous fields, terminate_episode is derived."""
    last = t == steps - 1
    return {
        "action": {**{k: np.asarray(action[k], np.float32).reshape(s) for k, s in ACTION_SHAPES.items()},
                   "terminate_episode": np.array([1, 0, 0] if last else [0, 1, 0], np.int32)},
        "is_first": t == 0, "is_last": last, "is_terminal": last, "reward": np.float32(last),
        "observation": {"image": image, "natural_language_instruction": instruction,
                        "natural_language_embedding": np.zeros(512, np.float32),
                        **{k: np.zeros(s, np.float32) for k, s in STATE_SHAPES.items()}},
    }


def episode(steps: list[dict]) -> dict:
    return {"steps": steps, "aspects": {k: False for k in ("already_success", "success", "undesirable", "feasible",
                                                           "has_aspects")},
            "attributes": {"collection_mode": 1, "collection_mode_name": "teleop", "data_type": 1,
                           "data_type_name": "robot", "env": 1, "env_name": "mk1", "location": 1,
                           "location_name": "kitchen", "objects_family": 1, "objects_family_name": "cans",
                           "task_family": 1, "task_family_name": "pick"}}


def write(data_dir: str, make_examples: Callable[[], Examples], num_shards: int | None = None) -> str:
    """Writes a `train` split; `make_examples()` yields (key, `episode(...)`). Returns `<data_dir>/<NAME>/<VERSION>`."""
    return write_tfds_dataset(data_dir, NAME, VERSION, features(), {"train": make_examples}, num_shards=num_shards,
                              description="RT-1 (fractal20220817_data) format (RLDS)")
