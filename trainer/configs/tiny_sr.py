"""A tiny first super-resolution stage (24×40 → 48×80) that trains on a CPU in minutes: for the demo, the tests and
smoke runs of the cascade. Same structure as `sr1.py`, far narrower."""

from unisim.trainer.configs.tiny import get_config as tiny_config


def get_config():
    config = tiny_config()
    config.stage = "super_resolution"
    config.lowres = (24, 40)
    config.model.update(channels=8, channel_mult=(1, 2), attention_resolutions=(24,), attention_heads=(2,),
                        temporal="conv", groups=4)
    config.input.update(height=48, width=80, history_frames=0)
    return config
