"""The history-conditioned video diffusion U-Net (paper §2.2, Appendix 10, Table 6), in Flax linen.

A 3D U-Net factorised in space and time: every block is a residual spatial convolution, then (at the attention
resolutions) spatial self-attention with cross-attention to the conditioning tokens, then temporal mixing —
temporal self-attention in the base model, a temporal convolution in the super-resolution models (`temporal`).
Down and up passes with skip connections, channel multipliers and blocks per resolution as configured.

Inputs: the noisy target frames [B, T, H, W, 3], the log-SNR of their noise level [B], and a `Conditioning`:
- the history frames [B, Hh, H, W, 3] with their mask, concatenated channelwise to every target frame (the paper
  takes 4 frames from the previous segment and concatenates them to the noise);
- the T5 text embedding [B, L, d] with its mask, through a `cond_mlp_layers`-layer MLP to `cond_dim`, then used as
  cross-attention tokens and (masked mean) in the global embedding;
- the control tokens [B, T, D] (4096 bins) with their mask, through a learned embedding of the bins (plus an
  embedding of the dimension and of the target frame they lead to), as cross-attention tokens beside the text
  (the paper: "discretize them into 4096 bins concatenated with language embeddings"); and, per target frame
  (`frame_controls`), the embedding of its own action and the running sum of the actions before it, added to that
  frame's FiLM embedding. The tokens alone leave each frame to find its action by attention; the per-frame path
  gives frame t what decides it — the actions up to t — directly (issue 17: a model that follows controls);
- `drop` [B]: examples that train (or sample) the null condition: their tokens are replaced by a learned null
  token and their pooled embedding by a learned null vector (classifier-free guidance); history stays;
- super-resolution models only, `lowres` [B, T, h, w, 3]: the low-resolution video, upsampled (bilinear) to the
  output size and concatenated channelwise to the noisy frames (Imagen Video's cascade; the paper's 24×40 → 48×80
  and 48×80 → 192×320 stages). Their input has no history frames (`history_frames = 0`).
Output: shaped like the input frames; ε, v or x by the trainer's `config.prediction` (trainer/diffusion.py).

Spatial layers run as 2-D operations over the batch × time axis (a (1, 3, 3) 3-D convolution is the same map).
Measured on XLA's CPU backend (2 cores, forward + backward of one 3×3 convolution over 64 frames): 75 against 123 ms
at 12×20×64, 32 against 90 ms at 6×10×128, 117 against 213 ms at 6×10×256 — but 401 against 179 ms at 24×40×32,
where the 2-D weight gradient takes a slow path; the tiny config (16 channels at 24×40) still trains 1.3× faster
as a whole (2.26 against 2.90 s per step of 4). `patch_size` p > 1 folds each p×p patch
of the input into channels before the first layer and unfolds the output after the last (space-to-depth, as in
"simple diffusion", Hoogeboom et al. 2023): the U-Net then runs at 1/p of the resolution with the same
attention resolutions counted on its own feature maps.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unisim.schemas.record import NUM_CONTROL_BINS  # the bins the converter wrote: one definition


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    channels: int = 1024  # base channels (Table 6)
    channel_mult: tuple[int, ...] = (1, 2, 4)
    blocks_per_resolution: int = 3
    attention_resolutions: tuple[int, ...] = (6, 12, 24)  # feature-map heights that get attention
    attention_heads: tuple[int, ...] = (16, 16, 8)  # heads at each attention resolution, same order
    cond_dim: int = 4096  # conditioning embedding dimension
    cond_mlp_layers: int = 4
    dropout: float = 0.1
    temporal: str = "attention"  # "attention" (base model) or "conv" (super-resolution models)
    groups: int = 32  # GroupNorm groups (reduced to a divisor of the width where needed: `_group_norm`)
    patch_size: int = 1  # space-to-depth factor of the input (1: the U-Net runs at the frame size)
    frame_controls: bool = True  # per-frame FiLM from the frame's action and the running sum before it
    # How a control token becomes a vector: "bins", a learned vector per bin (a vocabulary of 4096); or "value",
    # an MLP of Fourier features of the bin's centre, so that neighbouring bins embed alike and a model that has seen
    # few of the 4096 bins (a small dataset) still reads the ones it has not (issue 17).
    control_embedding: str = "bins"
    # Recompute each U-Net block's activations in the backward pass instead of keeping them: less memory for about
    # a third more FLOPs; what makes Table 6's model fit a chip (docs/accelerators.md).
    remat: bool = False
    dtype: Any = jnp.float32  # compute dtype (bfloat16 on accelerators); parameters stay float32

    def heads_at(self, height: int) -> int:
        return self.attention_heads[self.attention_resolutions.index(height)]


@dataclasses.dataclass
class Conditioning:
    history: jax.Array  # [B, Hh, H, W, 3] in [-1, 1]
    history_mask: jax.Array  # [B, Hh] bool
    text: jax.Array  # [B, L, d]
    text_mask: jax.Array  # [B, L] bool
    controls: jax.Array  # [B, T, D] int32 bins
    control_mask: jax.Array  # [B, T, D] bool
    drop: jax.Array  # [B] bool: use the null condition
    lowres: jax.Array | None = None  # super-resolution models: the low-resolution video [B, T, h, w, 3] in [-1, 1]


jax.tree_util.register_dataclass(Conditioning, data_fields=[f.name for f in dataclasses.fields(Conditioning)],
                                 meta_fields=[])


def _group_norm(config: ModelConfig, channels: int) -> nn.GroupNorm:
    """GroupNorm with gcd(`config.groups`, `channels`) groups: the configured count wherever it divides the width,
    fewer where a skip concatenation gives a width it does not (48 channels with 32 groups → 16)."""
    return nn.GroupNorm(math.gcd(config.groups, channels), dtype=config.dtype)


def spatial_conv(x: jax.Array, features: int, config: ModelConfig, *, strides: int = 1, zero_init: bool = False,
                 dtype=None) -> jax.Array:
    """A 3×3 convolution of every frame of x [B, T, H, W, C], as one 2-D convolution over B·T frames."""
    b, t, h, w, c = x.shape
    conv = nn.Conv(features, (3, 3), strides=(strides, strides), dtype=dtype or config.dtype,
                   **({"kernel_init": nn.initializers.zeros} if zero_init else {}))
    y = conv(x.reshape(b * t, h, w, c))
    return y.reshape(b, t, *y.shape[1:])


def temporal_conv(x: jax.Array, features: int, config: ModelConfig) -> jax.Array:
    """A width-3 convolution along time at every position of x [B, T, H, W, C], zero-initialised."""
    b, t, h, w, c = x.shape
    seq = x.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, c)
    seq = nn.Conv(features, (3,), dtype=config.dtype, kernel_init=nn.initializers.zeros)(seq)
    return seq.reshape(b, h, w, t, features).transpose(0, 3, 1, 2, 4)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """[B, T, H, W, C] → [B, T, H/p, W/p, p·p·C]."""
    if p == 1:
        return x
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
    """The inverse of `space_to_depth`."""
    if p == 1:
        return x
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h, w, p, p, c // (p * p)).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h * p, w * p, c // (p * p))


def timestep_embedding(logsnr: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal features of the log-SNR (scaled into a timestep-like range), [B] → [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
    args = (logsnr[:, None] * 50.0) * freqs[None]  # log-SNR in [-20, 20] → ±1000, like diffusion timesteps
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResBlock(nn.Module):
    channels: int
    config: ModelConfig

    @nn.compact
    def __call__(self, x, emb, deterministic: bool):
        """x [B, T, H, W, C]; emb [B, T, E]: each frame's embedding (noise level, condition, its action)."""
        c = self.config
        h = nn.swish(_group_norm(c, x.shape[-1])(x))
        h = spatial_conv(h, self.channels, c)
        scale, shift = jnp.split(nn.Dense(2 * self.channels, dtype=c.dtype)(nn.swish(emb)), 2, axis=-1)
        h = _group_norm(c, self.channels)(h)
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = nn.Dropout(c.dropout)(nn.swish(h), deterministic=deterministic)
        h = spatial_conv(h, self.channels, c, zero_init=True)
        if c.temporal == "conv":  # super-resolution models: temporal convolution instead of temporal attention
            h = h + temporal_conv(nn.swish(h), self.channels, c)
        if x.shape[-1] != self.channels:
            x = nn.Dense(self.channels, dtype=c.dtype)(x)
        return x + h


class SpatialAttention(nn.Module):
    """Self-attention over each frame's positions, then cross-attention to the conditioning tokens."""

    heads: int
    config: ModelConfig

    @nn.compact
    def __call__(self, x, tokens, token_mask):
        c = self.config
        b, t, h, w, ch = x.shape
        seq = x.reshape(b * t, h * w, ch)
        normed = _group_norm(c, ch)(seq)
        seq = seq + nn.MultiHeadDotProductAttention(self.heads, dtype=c.dtype, out_kernel_init=nn.initializers.zeros,
                                                    name="self")(normed, normed)
        context = jnp.repeat(tokens, t, axis=0)  # [B·T, N, cond]
        mask = jnp.repeat(token_mask, t, axis=0)[:, None, None, :]  # [B·T, 1, 1, N]
        normed = nn.LayerNorm(dtype=c.dtype)(seq)
        seq = seq + nn.MultiHeadDotProductAttention(self.heads, dtype=c.dtype, out_kernel_init=nn.initializers.zeros,
                                                    name="cross")(normed, context, mask=mask)
        return seq.reshape(b, t, h, w, ch)


class TemporalAttention(nn.Module):
    """Self-attention along time at every position, with a learned position embedding of the frame index."""

    heads: int
    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        b, t, h, w, ch = x.shape
        seq = x.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, ch)
        position = self.param("position", nn.initializers.normal(0.02), (64, ch))[:t]
        normed = _group_norm(c, ch)(seq) + position.astype(c.dtype)
        seq = seq + nn.MultiHeadDotProductAttention(self.heads, dtype=c.dtype,
                                                    out_kernel_init=nn.initializers.zeros)(normed, normed)
        return seq.reshape(b, h, w, t, ch).transpose(0, 3, 1, 2, 4)


class Block(nn.Module):
    channels: int
    config: ModelConfig

    @nn.compact
    def __call__(self, x, emb, tokens, token_mask, deterministic: bool):
        x = ResBlock(self.channels, self.config)(x, emb, deterministic)
        height = x.shape[2]
        if height in self.config.attention_resolutions:
            heads = self.config.heads_at(height)
            x = SpatialAttention(heads, self.config)(x, tokens, token_mask)
            if self.config.temporal == "attention":
                x = TemporalAttention(heads, self.config)(x)
        return x


class ConditionEncoder(nn.Module):
    """Text and controls → (cross-attention tokens [B, N, cond], their mask [B, N], pooled vector [B, cond],
    per-frame action vectors [B, T, cond] — zeros unless `frame_controls`)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, cond: Conditioning):
        c = self.config
        text = nn.Dense(c.cond_dim, dtype=c.dtype)(cond.text.astype(c.dtype))
        for _ in range(c.cond_mlp_layers - 1):
            text = text + nn.Dense(c.cond_dim, dtype=c.dtype)(nn.swish(nn.LayerNorm(dtype=c.dtype)(text)))
        b, t, d = cond.controls.shape
        bins = jnp.clip(cond.controls, 0, NUM_CONTROL_BINS - 1)
        if c.control_embedding == "bins":
            controls = nn.Embed(NUM_CONTROL_BINS, c.cond_dim, dtype=c.dtype)(bins)
        elif c.control_embedding == "value":
            value = (bins.astype(jnp.float32) + 0.5) / NUM_CONTROL_BINS * 2 - 1  # the bin's centre in [-1, 1]
            angles = value[..., None] * (jnp.pi * 2.0 ** jnp.arange(8))  # wavelengths from 2 down to 1/64
            features = jnp.concatenate([value[..., None], jnp.sin(angles), jnp.cos(angles)], axis=-1).astype(c.dtype)
            # A linear part (which a running sum over frames keeps linear in the values) and an MLP for the rest.
            controls = nn.Dense(c.cond_dim, dtype=c.dtype)(features) + nn.Dense(c.cond_dim, dtype=c.dtype)(
                nn.swish(nn.Dense(c.cond_dim, dtype=c.dtype)(features)))
        else:
            raise ValueError(f"model.control_embedding must be 'bins' or 'value', not {c.control_embedding!r}")
        controls = controls + self.param("control_dim", nn.initializers.normal(0.02), (max(d, 1), c.cond_dim))[:d]
        # Which target frame a token leads to: without it the tokens are a set, and frame t cannot tell its own
        # action from the others'.
        controls = controls + self.param("control_frame", nn.initializers.normal(0.02),
                                         (64, c.cond_dim))[:t, None].astype(c.dtype)
        tokens = jnp.concatenate([text, controls.reshape(b, t * d, c.cond_dim)], axis=1)
        mask = jnp.concatenate([cond.text_mask, cond.control_mask.reshape(b, t * d)], axis=1)
        pooled = (tokens * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
        drop = cond.drop[:, None]
        frames = jnp.zeros((b, t, c.cond_dim), c.dtype)
        if c.frame_controls:
            # Frame t is the result of the actions up to t: its own action's embedding and the running sum of
            # those before it (a delta control integrates to a position; an absolute one keeps its own).
            own = (controls * cond.control_mask[..., None]).sum(2)  # [B, T, cond]
            before = jnp.cumsum(own, axis=1) - own
            frames = nn.Dense(c.cond_dim, dtype=c.dtype)(jnp.concatenate([own, before], axis=-1))
            frames = jnp.where(drop[..., None], 0, frames)
        # Classifier-free guidance: the null condition is one learned token and a learned pooled vector.
        null_token = self.param("null_token", nn.initializers.normal(0.02), (1, 1, c.cond_dim)).astype(c.dtype)
        null_pooled = self.param("null_pooled", nn.initializers.normal(0.02), (1, c.cond_dim)).astype(c.dtype)
        tokens = jnp.where(drop[..., None], jnp.zeros_like(tokens).at[:, :1].set(null_token[0]), tokens)
        mask = jnp.where(drop, jnp.zeros_like(mask).at[:, 0].set(True), mask)
        pooled = jnp.where(drop, null_pooled, pooled)
        return tokens, mask, pooled, frames


class VideoUNet(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, noisy: jax.Array, logsnr: jax.Array, cond: Conditioning, deterministic: bool = True):
        c = self.config
        b, t, h, w, _ = noisy.shape
        p = c.patch_size
        # `deterministic` (argument 5, counting the module) is a Python bool: static under rematerialisation. Blocks
        # are named as Flax names them unwrapped (Block_0, Block_1, …), so a checkpoint loads with remat on or off.
        wrapped = nn.remat(Block, static_argnums=(5,)) if c.remat else Block
        names = (f"Block_{i}" for i in itertools.count())
        block = lambda channels, config: wrapped(channels, config, name=next(names))  # noqa: E731
        if h % p or w % p:
            raise ValueError(f"frames of {h}×{w} do not split into {p}×{p} patches (model.patch_size)")
        tokens, token_mask, pooled, frame_actions = ConditionEncoder(c)(cond)
        emb = nn.Dense(4 * c.channels, dtype=c.dtype)(timestep_embedding(logsnr, c.channels).astype(c.dtype))
        emb = nn.Dense(4 * c.channels, dtype=c.dtype)(nn.swish(emb)) + nn.Dense(4 * c.channels, dtype=c.dtype)(pooled)
        emb = jnp.broadcast_to(emb[:, None], (b, t, emb.shape[-1]))  # one embedding per target frame
        if c.frame_controls:
            emb = emb + nn.Dense(4 * c.channels, dtype=c.dtype)(frame_actions)
        # History: every history frame's channels (and whether it exists) beside every target frame.
        history = cond.history * cond.history_mask[:, :, None, None, None]
        history = history.transpose(0, 2, 3, 1, 4).reshape(b, h, w, history.shape[1] * history.shape[-1])
        presence = jnp.broadcast_to(cond.history_mask[:, None, None, :], (b, h, w, cond.history_mask.shape[1]))
        extra = jnp.concatenate([history, presence.astype(history.dtype)], axis=-1)
        x = jnp.concatenate([noisy, jnp.broadcast_to(extra[:, None], (b, t, h, w, extra.shape[-1]))], axis=-1)
        if cond.lowres is not None:
            x = jnp.concatenate([x, jax.image.resize(cond.lowres, (b, t, h, w, cond.lowres.shape[-1]), "linear")],
                                axis=-1)
        x = spatial_conv(space_to_depth(x.astype(c.dtype), p), c.channels, c)
        skips = [x]
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.blocks_per_resolution):
                x = block(c.channels * mult, c)(x, emb, tokens, token_mask, deterministic)
                skips.append(x)
            if level < len(c.channel_mult) - 1:
                x = spatial_conv(x, x.shape[-1], c, strides=2)
                skips.append(x)
        x = block(x.shape[-1], c)(x, emb, tokens, token_mask, deterministic)
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for _ in range(c.blocks_per_resolution + 1):
                x = block(c.channels * mult, c)(jnp.concatenate([x, skips.pop()], axis=-1), emb, tokens,
                                                 token_mask, deterministic)
            if level > 0:
                x = jax.image.resize(x, (*x.shape[:2], x.shape[2] * 2, x.shape[3] * 2, x.shape[4]), "nearest")
                x = spatial_conv(x, x.shape[-1], c)
        x = nn.swish(_group_norm(c, x.shape[-1])(x))
        x = spatial_conv(x, noisy.shape[-1] * p * p, c, zero_init=True, dtype=jnp.float32)
        return depth_to_space(x, p)
