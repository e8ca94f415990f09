"""The tabletop world's base model on a 2-core CPU (issue 17): the paper's history-conditioned U-Net, sized and
shaped for a 30-minute training budget on `bench/fidelity.py`'s Language Table-format episodes.

Departures from Table 6 (configs/base.py), each for speed or learnability on a CPU:
- 8 target frames per segment, not 16: the step costs half as much, and a rollout takes two segments for 16;
- 4×4 patches (model.patch_size): the U-Net runs at 6×10 and 3×5 with 64 and 128 channels;
- attention (spatial, cross and temporal) at the 3×5 map only;
- x-prediction of the residual from the last history frame (config.residual, trainer/diffusion.py) instead of ε
  of the frames: an untrained model is copy-last-frame, and training only has to learn what moves;
- each example's window starts at a random frame of its record (input.random_window);
- control tokens embedded from their bins' values (model.control_embedding = "value"), not a learned vector per
  bin: ~11k training frames cannot teach 2 × 4096 separate vectors (measured: 10 minutes of training, held-out
  action error 4.00 px with per-bin vectors, 3.15 px from values; bench/RESULTS.md);
- a short text (16 tokens: the instructions are ~12) and a 64-wide conditioning embedding.

    unisim train --config trainer/configs/tabletop_cpu.py --workdir runs/tabletop --mixture clips:1
"""

from unisim.trainer.configs.base import get_config as base_config


def get_config():
    config = base_config()
    config.model.update(channels=64, channel_mult=(1, 2), blocks_per_resolution=1, attention_resolutions=(3,),
                        attention_heads=(4,), cond_dim=64, cond_mlp_layers=2, groups=16, dropout=0.0, patch_size=4,
                        frame_controls=True, control_embedding="value")
    config.input.update(batch_size=8, frames=8, text_tokens=16, threads=2, random_window=True)
    config.optimizer.update(learning_rate=1e-3, warmup_steps=100, ema_decay=0.999)
    config.prediction = "x"
    config.residual = True
    config.steps = 1_000_000  # bounded by config.max_train_seconds in bench/fidelity.py
    config.log_every = 50
    config.checkpoint_every = 500
    config.sample_every = 0
    config.sample_steps = 8
    config.mixture = ""  # always given: --mixture DIR:1
    return config
