"""Gaussian diffusion in log-SNR form (Kingma et al. 2021; Ho et al. 2022): the cosine schedule clipped to
[-20, 20], ε-prediction, and the masked MSE training loss.

    z_t = α_t x + σ_t ε,   α_t² = sigmoid(λ_t),   σ_t² = sigmoid(−λ_t),   λ_t = −2 log tan(a t + b)

with a, b chosen so that λ_0 = `LOGSNR_MAX` and λ_1 = `LOGSNR_MIN`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0


def cosine_logsnr(t: jax.Array, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> jax.Array:
    """λ(t) for t in [0, 1]: the cosine schedule, clipped to [logsnr_min, logsnr_max] at the ends."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    # The explicit clip holds the bounds in float32 too, where tan near π/2 overshoots them slightly.
    return jnp.clip(-2.0 * jnp.log(jnp.tan(a * t + b)), logsnr_min, logsnr_max)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def add_noise(x: jax.Array, noise: jax.Array, logsnr: jax.Array) -> jax.Array:
    """z = α x + σ ε, with one log-SNR per example (x: [B, …])."""
    alpha, sigma = alpha_sigma(logsnr)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return alpha.reshape(shape) * x + sigma.reshape(shape) * noise


def masked_mse(prediction: jax.Array, target: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Mean squared error over the real target frames only ([B, T, H, W, C] with a [B, T] mask)."""
    error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)).mean(axis=(2, 3, 4))
    return (error * frame_mask).sum() / jnp.maximum(frame_mask.sum(), 1)


def ddim_sample(denoise, noise: jax.Array, steps: int) -> jax.Array:
    """Deterministic DDIM sampling from pure noise in `steps` steps; `denoise(z, logsnr[B]) → ε`. Returns x in
    [-1, 1]. (The 256-step ancestral sampler and guidance belong to the simulator.)"""
    times = jnp.linspace(1.0, 0.0, steps + 1)
    batch = noise.shape[0]

    def step(i, carry):
        z, _ = carry
        logsnr, logsnr_next = cosine_logsnr(times[i]), cosine_logsnr(times[i + 1])
        eps = denoise(z, jnp.full((batch,), logsnr)).astype(jnp.float32)
        alpha, sigma = alpha_sigma(logsnr)
        x = jnp.clip((z - sigma * eps) / alpha, -1.0, 1.0)
        alpha_next, sigma_next = alpha_sigma(logsnr_next)
        return alpha_next * x + sigma_next * eps, x

    _, x = jax.lax.fori_loop(0, steps, step, (noise, jnp.zeros_like(noise)))
    return x
