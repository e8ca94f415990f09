"""The stage contract: how frames become a stage's model input and what its model conditions on.

One definition for training (`trainer/train.py`) and sampling (`simulator/core.py`), so the two cannot drift:

- frames are uint8 outside and [-1, 1] float inside (`to_unit`, `to_uint8`);
- a super-resolution stage conditions on the low-resolution video: in training its own targets downsampled with
  antialiasing to `config.lowres` (`lowres_of`), in sampling the previous stage's output;
- the conditioning frames (history; SR: the low-resolution video) get Gaussian noise of std
  `config.condition_noise` in training and again in sampling (the paper's "noisy previous observation"), drawn
  per example from that example's key, split the same way in both (`conditioning`);
- the residual anchor of `config.residual` is the last history frame, clean or (`config.noisy_anchor`) as the
  conditioning has it (`anchor`);
- the model and its parameter shapes come from the config (`build_model`, `abstract_params`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unisim.trainer import data, diffusion
from unisim.trainer.model import Conditioning, ModelConfig, VideoUNet


def to_unit(frames) -> jax.Array:
    """uint8 frames → float32 in [-1, 1]."""
    return jnp.asarray(frames).astype(jnp.float32) / 127.5 - 1


def to_uint8(x) -> np.ndarray:
    """[-1, 1] float frames → uint8 (clipped, rounded)."""
    return np.asarray(jnp.round((jnp.clip(x, -1, 1) + 1) * 127.5)).astype(np.uint8)


def is_super_resolution(config) -> bool:
    return config.stage == "super_resolution"


def lowres_of(frames: jax.Array, size) -> jax.Array:
    """Target frames [B, T, H, W, C] in [-1, 1] → the low-resolution video a super-resolution stage conditions on."""
    return jax.image.resize(frames, (*frames.shape[:2], *size, frames.shape[-1]), "linear", antialias=True)


def anchor(config, history: jax.Array, history_mask: jax.Array, cond: Conditioning | None = None) -> jax.Array | float:
    """What a residual stage's frames are relative to (`diffusion.residual_anchor`); 0 for other stages.

    The clean last history frame (`history` is uint8), or with `config.noisy_anchor` the last frame of the
    conditioning's history, condition noise and all (`cond`, required then): a model trained that way has to take
    its anchor's deviations out of its output, which an autoregressive rollout needs, where the anchor is the model's
    own last frame and a clean anchor would carry every error of it into every later segment."""
    if not config.get("residual", False):
        return 0.0
    if config.get("noisy_anchor", False):
        if cond is None:
            raise ValueError("config.noisy_anchor: the anchor is the conditioning's history; pass its Conditioning")
        return diffusion.residual_anchor(cond.history, history_mask)
    return diffusion.residual_anchor(to_unit(history), history_mask)


def sample_bound(config) -> float:
    """What a stage's sampler clips its estimate of the clean video to: [-1, 1], or [-2, 2] for a residual stage
    (it predicts frames minus their anchor)."""
    return 2.0 if config.get("residual", False) else 1.0


def finish_sample(config, x: jax.Array, history: jax.Array, history_mask: jax.Array,
                  cond: Conditioning | None = None) -> jax.Array:
    """A sampler's output → frames in [-1, 1]: the anchor added back (residual stages), clipped. Training's sample
    videos and the simulator end sampling here."""
    return jnp.clip(x + anchor(config, history, history_mask, cond), -1.0, 1.0)


def conditioning(config, parts, drop: jax.Array, keys: jax.Array | None = None,
                 lowres: jax.Array | None = None) -> Conditioning:
    """The model's conditioning from `parts` (a batch, or the simulator's action and history: `history` uint8,
    `history_mask`, `text`, `text_mask`, `controls`, `control_mask`; for a super-resolution stage in training,
    `frames`, whose downsampled copy is the low-resolution video when `lowres` is not given).

    `keys` ([B] typed PRNG keys, one per example) draw the condition noise; None (initialisation, training-time
    samples) adds none. Each example's key is split into (history, low-res) keys, so an example's noise does not
    depend on what else shares its batch."""
    history = to_unit(parts["history"])
    if lowres is None and is_super_resolution(config):
        lowres = lowres_of(to_unit(parts["frames"]), tuple(config.lowres))
    std = float(config.get("condition_noise", 0.0))
    if keys is not None and std > 0:
        split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
        noise = lambda ks, x: jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(ks)  # noqa: E731
        history = history + std * noise(split[:, 0], history)
        if lowres is not None:
            lowres = lowres + std * noise(split[:, 1], lowres)
    return Conditioning(history=history, history_mask=parts["history_mask"], text=parts["text"],
                        text_mask=parts["text_mask"], controls=parts["controls"],
                        control_mask=parts["control_mask"], drop=drop, lowres=lowres)


def model_config(config) -> ModelConfig:
    """The `ModelConfig` of a trainer config (also of one read back from a run description, where tuples are
    lists)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.to_dict().items()}
    return ModelConfig(**fields, dtype=jnp.bfloat16 if config.bf16 else jnp.float32)


def build_model(config) -> VideoUNet:
    return VideoUNet(model_config(config))


def example_batch(config, text_dim: int, control_dims: int, batch: int = 1) -> dict:
    """A zero batch with the input's shapes and dtypes (for initialisation and benchmarks)."""
    return data.empty_batch(data.InputConfig(**config.input.to_dict()), batch, text_dim, control_dims)


def init_params(model: VideoUNet, config, text_dim: int, control_dims: int, rng) -> dict:
    example = example_batch(config, text_dim, control_dims)
    return model.init(rng, to_unit(example["frames"]), jnp.zeros((1,)),
                      conditioning(config, example, jnp.zeros((1,), bool)))


def abstract_params(config, text_dim: int, control_dims: int):
    """(model, the parameters' shapes and dtypes) — nothing allocated."""
    model = build_model(config)
    return model, jax.eval_shape(lambda rng: init_params(model, config, text_dim, control_dims, rng),
                                 jax.random.PRNGKey(config.seed))
