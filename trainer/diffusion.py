"""Gaussian diffusion in log-SNR form (Kingma et al. 2021; Ho et al. 2022): the cosine schedule clipped to
[-20, 20], the network's prediction target, the masked MSE training loss, the samplers (ancestral and DDIM) and
classifier-free guidance.

    z_t = α_t x + σ_t ε,   α_t² = sigmoid(λ_t),   σ_t² = sigmoid(−λ_t),   λ_t = −2 log tan(a t + b)

with a, b chosen so that λ_0 = `LOGSNR_MAX` and λ_1 = `LOGSNR_MIN`.

What the network predicts (`prediction`, the trainer's `config.prediction`), and its loss the MSE against it:
- "eps": the noise ε (DDPM; the default, and the paper's base config);
- "v": v = α ε − σ x (Salimans & Ho 2022; what Imagen Video, the paper's cascade, uses): every noise level's
  target has unit scale, and the x̂ it implies at high noise is the model's direct estimate rather than
  (z − σ ε̂)/α with α ≈ 0;
- "x": the clean frames themselves.
All three are affine in the output for a given z and λ, with coefficients that sum as Eq. 2's do, so
classifier-free guidance combines raw outputs (`guided`) and the samplers convert after (`eps_and_x`).
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


PREDICTIONS = ("eps", "v", "x")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}")
    return prediction


def prediction_of(config) -> str:
    """A trainer config's `prediction`; configs and run.json files from before it existed mean ε."""
    return check_prediction(config.get("prediction", "eps"))


def residual_anchor(history: jax.Array, history_mask: jax.Array) -> jax.Array:
    """The frame a residual model's targets are relative to: each example's last history frame [B, 1, H, W, C]
    (history is right-aligned), zeros for an example without history (and for super-resolution stages).

    With `config.residual` the model diffuses `frames − anchor` and a sample is `anchor + residual` (as in Yang et
    al. 2022's residual video diffusion): "nothing moves" is the zero residual, so the static scene that fills most
    of a frame need not be learned through the network before motion can be."""
    if history.shape[1] == 0:
        return jnp.zeros((history.shape[0], 1, *history.shape[2:]), history.dtype)
    return history[:, -1:] * history_mask[:, -1:, None, None, None].astype(history.dtype)


def training_target(x: jax.Array, noise: jax.Array, logsnr: jax.Array, prediction: str = "eps") -> jax.Array:
    """What the network learns to output for z = α x + σ ε (one log-SNR per example)."""
    if check_prediction(prediction) == "eps":
        return noise
    if prediction == "x":
        return x
    alpha, sigma = alpha_sigma(logsnr)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return alpha.reshape(shape) * noise - sigma.reshape(shape) * x


def eps_and_x(output: jax.Array, z: jax.Array, logsnr: jax.Array, prediction: str = "eps", bound: float = 1.0):
    """(ε̂, x̂ clipped to the data range [-bound, bound]) from the network's output at z; `logsnr` is a scalar
    (samplers). The range is [-1, 1] for frames, [-2, 2] for their residual from a frame (`residual_anchor`)."""
    alpha, sigma = alpha_sigma(logsnr)
    if check_prediction(prediction) == "eps":
        eps, x = output, (z - sigma * output) / alpha
    elif prediction == "v":
        eps, x = sigma * z + alpha * output, alpha * z - sigma * output
    else:
        eps, x = (z - alpha * output) / sigma, output
    return eps, jnp.clip(x, -bound, bound)


def masked_mse(prediction: jax.Array, target: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Mean squared error over the real target frames only ([B, T, H, W, C] with a [B, T] mask)."""
    error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)).mean(axis=(2, 3, 4))
    return (error * frame_mask).sum() / jnp.maximum(frame_mask.sum(), 1)


def _sample_loop(denoise, noise: jax.Array, steps: int, update, prediction: str, bound: float) -> jax.Array:
    """Runs `steps` denoising steps from t = 1 to t = 0 on the cosine schedule: at step i the model's ε and x̂ at
    λ_t (from its `prediction`), then `update(i, z, eps, x, λ_t, λ_s) → z_s`, the sampler's own move to the next
    level λ_s. Returns the last x̂ in [-bound, bound]."""
    times = jnp.linspace(1.0, 0.0, steps + 1)

    def step(i, carry):
        z, _ = carry
        logsnr_t, logsnr_s = cosine_logsnr(times[i]), cosine_logsnr(times[i + 1])
        output = denoise(z, jnp.full((z.shape[0],), logsnr_t)).astype(jnp.float32)
        eps, x = eps_and_x(output, z, logsnr_t, prediction, bound)
        return update(i, z, eps, x, logsnr_t, logsnr_s), x

    _, x = jax.lax.fori_loop(0, steps, step, (noise, jnp.zeros_like(noise)))
    return x


def ddim_sample(denoise, noise: jax.Array, steps: int, prediction: str = "eps", bound: float = 1.0) -> jax.Array:
    """Deterministic DDIM sampling (η_DDIM = 0) from pure noise in `steps` steps on the cosine schedule;
    `denoise(z, logsnr[B])` → the network's output (ε, v or x: `prediction`). Returns x in [-1, 1]. Each step moves
    to the next noise level along the predicted noise, so a few steps (8–32) give usable samples — the fast
    sampler."""

    def update(i, z, eps, x, logsnr_t, logsnr_s):
        alpha_s, sigma_s = alpha_sigma(logsnr_s)
        return alpha_s * x + sigma_s * eps

    return _sample_loop(denoise, noise, steps, update, prediction, bound)


def ancestral_sample(denoise, noise: jax.Array, keys: jax.Array, steps: int = 256, gamma: float = 0.1,
                     prediction: str = "eps", bound: float = 1.0) -> jax.Array:
    """The ancestral sampler of Video Diffusion Models (Ho et al. 2022), the paper's sampler (Table 6: 256 steps,
    log-variance interpolation γ = 0.1). From level t to the less noisy s (λ_s > λ_t), with x̂ from the model:

        z_s = μ̃(z_t, x̂) + sqrt(exp((1 − γ) log σ̃²_{s|t} + γ log σ²_{t|s})) ξ,   ξ ~ N(0, I)
        μ̃ = e^{λ_t − λ_s} (α_s / α_t) z_t + (1 − e^{λ_t − λ_s}) α_s x̂
        σ̃²_{s|t} = (1 − e^{λ_t − λ_s}) σ_s²   (the posterior variance: the lower bound)
        σ²_{t|s} = (1 − e^{λ_t − λ_s}) σ_t²   (the forward, "prior" variance: the upper bound)

    The last step returns x̂ without noise. `keys` [B] draw each example's ξ, so an example's sample depends on its
    own key only, not on what else shares the batch."""

    def update(i, z, eps, x, logsnr_t, logsnr_s):
        (alpha_t, sigma_t), (alpha_s, sigma_s) = alpha_sigma(logsnr_t), alpha_sigma(logsnr_s)
        ratio = jnp.exp(logsnr_t - logsnr_s)  # e^{λ_t − λ_s} < 1
        mean = ratio * (alpha_s / alpha_t) * z + (1 - ratio) * alpha_s * x
        log_posterior = jnp.log1p(-ratio) + 2 * jnp.log(sigma_s)
        log_prior = jnp.log1p(-ratio) + 2 * jnp.log(sigma_t)
        std = jnp.exp(0.5 * ((1 - gamma) * log_posterior + gamma * log_prior))
        xi = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, i), z.shape[1:], z.dtype))(keys)
        return jnp.where(i == steps - 1, x, mean + std * xi)

    return _sample_loop(denoise, noise, steps, update, prediction, bound)


def guided(denoise_both, eta):
    """Classifier-free guidance, the paper's Eq. 2: ε = (1 + η) ε(z | history, action) − η ε(z | history).

    `denoise_both(z2, logsnr2, drop2)` evaluates the model once on the batch stacked twice — the first half with the
    action, the second with the null condition (`drop` True) — so guidance costs one call of twice the batch, not
    two calls. `eta` is a number or one per example ([B]). Returns `denoise(z, logsnr)` for the samplers, in the
    model's own parameterisation: combining v or x outputs this way is the same as combining the ε they imply
    (see the module docstring)."""

    def denoise(z, logsnr):
        b = z.shape[0]
        strength = jnp.reshape(jnp.asarray(eta, jnp.float32), (-1,) + (1,) * (z.ndim - 1))
        drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
        eps = denoise_both(jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]), drop).astype(jnp.float32)
        conditional, unconditional = eps[:b], eps[b:]
        return (1 + strength) * conditional - strength * unconditional

    return denoise
