"""The first spatial super-resolution stage, 24×40 → 48×80 (paper Appendix 10): temporal convolution instead of
temporal attention, conditioned on the upsampled low-resolution video (channel concatenation) and on the same text
and control conditioning as the base model; no history frames.

The paper gives one hyperparameter table (Table 6, the base model's). The optimiser, schedule, conditioning and
sampling settings are kept; the width (512) and attention resolutions (the 24- and 12-high feature maps) are our
choice for a 4× larger frame.

    unisim train --config trainer/configs/sr1.py --workdir /tmp/sr1
"""

from unisim.trainer.configs.base import get_config as base_config


def get_config():
    config = base_config()
    config.stage = "super_resolution"
    config.lowres = (24, 40)  # the video it upsamples: its target frames downsampled to this size in training
    config.model.update(channels=512, channel_mult=(1, 2, 4), attention_resolutions=(12, 24), attention_heads=(16, 8),
                        temporal="conv")
    config.input.update(height=48, width=80, history_frames=0)
    return config
