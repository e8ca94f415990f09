"""RT-1 (Brohan et al. 2022) as released in Open X-Embodiment: `fractal20220817_data` (RLDS), a fixed RLDS mapping.

frames = `observation/image` (256×320 JPEG), text = the first step's `observation/natural_language_instruction`,
controls = the continuous action fields concatenated in this order (10 values):

    world_vector[3] (x, y, z) · rotation_delta[3] (roll, pitch, yaw) · gripper_closedness_action[1] ·
    base_displacement_vector[2] (x, y) · base_displacement_vertical_rotation[1] (yaw)

`terminate_episode` (an int32 one-hot mode flag, not a control) is left out. The control rate is about 3 Hz.
Episodes have no id field: the id is the TFDS record id (file + position), stable for a given release.
"""

from __future__ import annotations

from unisim.adapters.registry import register
from unisim.adapters.rlds import RldsAdapter, RldsMapping

CONTROL_HZ = 3.0
ACTION_FIELDS = ("world_vector", "rotation_delta", "gripper_closedness_action", "base_displacement_vector",
                 "base_displacement_vertical_rotation")


@register
class Rt1(RldsAdapter):
    name = "rt1"
    description = "RT-1 / fractal20220817_data RLDS: image + instruction + 10-D arm and base actions"
    control_names = ("world_x", "world_y", "world_z", "rotation_roll", "rotation_pitch", "rotation_yaw",
                     "gripper_closedness", "base_x", "base_y", "base_yaw")

    @property
    def dataset_name(self) -> str:
        return self.name  # one release, one name: "rt1" reads better as a domain prefix than the builder's

    def make_mapping(self) -> RldsMapping:
        return RldsMapping(image="observation/image", actions=tuple(f"action/{f}" for f in ACTION_FIELDS),
                           fps=CONTROL_HZ, text="observation/natural_language_instruction",
                           control_names=self.control_names)
