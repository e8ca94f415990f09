"""The paper's base model and training hyperparameters (UniSim, Appendix 10, Table 6), as an ml_collections config.

Override any field on the command line: `unisim train --config trainer/configs/base.py --config.model.channels=256`.
"""

import dataclasses

import ml_collections

from unisim.trainer.data import InputConfig
from unisim.trainer.model import ModelConfig


def get_config():
    config = ml_collections.ConfigDict()
    # The model's and the input's fields are defined once, with their defaults (Table 6's), by the dataclasses the
    # trainer builds from them: `trainer.model.ModelConfig` and `trainer.data.InputConfig`.
    config.model = ml_collections.ConfigDict(
        {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k != "dtype"})  # dtype: config.bf16
    config.input = ml_collections.ConfigDict(dataclasses.asdict(InputConfig()))
    config.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, warmup_steps=10_000, b1=0.9, b2=0.99, clip_norm=1.0, ema_decay=0.9999))
    config.stage = "base"  # "base" (history-conditioned) or "super_resolution" (configs/sr1.py, sr2.py)
    # Std of the Gaussian noise added to the conditioning frames (history; SR: the low-resolution video), in
    # [-1, 1] units, in training and again when sampling (simulator): the paper's "noisy previous observation".
    config.condition_noise = 0.05
    config.prediction = "eps"  # what the network predicts: "eps", "v" or "x" (trainer/diffusion.py)
    config.residual = False  # diffuse the frames' difference from the last history frame (diffusion.residual_anchor)
    config.noisy_anchor = False  # residual: that frame as the conditioning has it, noise and all (stage.anchor)
    config.bf16 = False  # bfloat16 compute (parameters, optimizer state and EMA stay float32)
    config.fsdp = 1  # devices per FSDP group: parameters are sharded over them, the batch over all devices
    config.seed = 0
    config.steps = 1_000_000
    config.max_train_seconds = 0.0  # > 0: also stop (and checkpoint) once this call has trained this long
    config.log_every = 100
    config.checkpoint_every = 5_000
    config.keep_checkpoints = 3
    config.sample_every = 10_000  # sample videos from the EMA parameters into TensorBoard and workdir/samples
    config.sample_steps = 32  # deterministic (DDIM) steps for those samples
    config.mixture = "trainer/configs/mixtures/paper_table5.py"
    return config
