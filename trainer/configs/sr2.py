"""The second spatial super-resolution stage, 48×80 → 192×320 (paper Appendix 10): temporal convolution, conditioned
on the upsampled 48×80 video and the action conditioning; no history frames.

Table 6 is the base model's; width (128, multipliers 1, 2, 4, 8) and attention only on the 24-high feature map
are our choice — full-resolution attention over 192×320 frames would dominate the cost.

    unisim train --config trainer/configs/sr2.py --workdir /tmp/sr2
"""

from unisim.trainer.configs.base import get_config as base_config


def get_config():
    config = base_config()
    config.stage = "super_resolution"
    config.lowres = (48, 80)
    config.model.update(channels=128, channel_mult=(1, 2, 4, 8), blocks_per_resolution=2, attention_resolutions=(24,),
                        attention_heads=(8,), temporal="conv")
    config.input.update(height=192, width=320, history_frames=0)
    return config
