"""A tiny base model that trains on a CPU in minutes: for the demo, the tests and smoke runs. Same structure as
`base.py` (the paper's), far narrower and shallower."""

from unisim.trainer.configs.base import get_config as base_config


def get_config():
    config = base_config()
    config.model.update(channels=16, channel_mult=(1, 2), blocks_per_resolution=1, attention_resolutions=(6, 12),
                        attention_heads=(2, 2), cond_dim=32, cond_mlp_layers=2, groups=8, dropout=0.0)
    config.input.update(batch_size=4, threads=2)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=10, ema_decay=0.99)
    config.steps = 200
    config.log_every = 10
    config.checkpoint_every = 50
    config.sample_every = 100
    config.sample_steps = 8
    config.mixture = "trainer/configs/mixtures/demo.py"
    return config
