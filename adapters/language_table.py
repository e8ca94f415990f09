"""Language Table (Lynch et al. 2023) in its official RLDS release: the RLDS reader with a fixed mapping.

Every variant works (`language_table`, `language_table_sim`, `language_table_blocktoblock_*`, …): records are
named after the variant (the builder's name). `--source` as for any RLDS dataset (`adapters/rlds.py`).

Per step the release has `observation{rgb uint8[360,640,3] JPEG, instruction int32[512] zero-padded UTF-8,
effector_translation f32[2], effector_target_translation f32[2]}`, `action f32[2]`, `reward`, `is_first`,
`is_last`, `is_terminal`. An episode becomes: frames = the rgb JPEGs, text = the first step's instruction,
controls = `action` per step, 10 Hz.
"""

from __future__ import annotations

import numpy as np

from unisim.adapters.registry import register
from unisim.adapters.rlds import RldsAdapter, RldsMapping, find_builder_dir, text_value  # noqa: F401  (re-exported)

CONTROL_HZ = 10.0


def decode_instruction(codes: np.ndarray) -> str:
    """The release's decoding, `bytes(inst[inst != 0]).decode("utf-8")`; bad bytes raise `TextError`."""
    return text_value(np.asarray(codes))


@register
class LanguageTable(RldsAdapter):
    name = "language_table"
    description = "Language Table RLDS (real, sim and block-to-block variants): rgb + instruction + 2-D actions"
    control_names = ("action_dx", "action_dy")

    def make_mapping(self) -> RldsMapping:
        return RldsMapping(image="observation/rgb", actions=("action",), fps=CONTROL_HZ, text="observation/instruction",
                           episode_id="episode_id", control_names=self.control_names)
