"""The samplers (trainer/diffusion.py), the super-resolution stage, `Simulator` (simulator/core.py) on tiny trained
checkpoints, and `unisim rollout`."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unisim.simulator.checkpoint import CheckpointError, load_stage, resolve
from unisim.simulator.core import Action, ActionError, SamplerSettings, Simulator
from unisim.trainer import diffusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------------------------------- samplers

MEAN, STD = 0.3, 0.2  # data distribution N(MEAN, STD²) per pixel: its exact ε-predictor is known in closed form


def _exact_denoiser(z, logsnr):
    """E[ε | z] for x ~ N(MEAN, STD²): z = αx + σε is Gaussian, so E[ε|z] = σ (z − α MEAN) / (α² STD² + σ²)."""
    alpha, sigma = diffusion.alpha_sigma(logsnr)
    alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
    return sigma * (z - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)


def _exact_output(prediction):
    """The exact denoiser in the network's parameterisation: ε, v = α ε − σ x̂ or x̂ = (z − σ ε) / α."""

    def denoise(z, logsnr):
        eps = _exact_denoiser(z, logsnr)
        alpha, sigma = (a.reshape(-1, 1) for a in diffusion.alpha_sigma(logsnr))
        x = (z - sigma * eps) / alpha
        return {"eps": eps, "v": alpha * eps - sigma * x, "x": x}[prediction]

    return denoise


# Both samplers read the network's output through the same `eps_and_x`, so the ancestral one is run for ε only.
@pytest.mark.parametrize("sampler,prediction", [("ancestral", "eps"), ("ddim", "eps"), ("ddim", "v"), ("ddim", "x")])
def test_samplers_draw_the_data_distribution_with_the_exact_denoiser(sampler, prediction):
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 4096))
    denoise = _exact_output(prediction)
    if sampler == "ancestral":
        keys = jax.random.split(jax.random.PRNGKey(1), 4)
        x = jax.jit(lambda n, k: diffusion.ancestral_sample(denoise, n, k, steps=256, gamma=0.1,
                                                            prediction=prediction))(noise, keys)
    else:  # the deterministic sampler's few-step error shrinks the spread (8 steps: 0.13); 512 steps converge
        x = jax.jit(lambda n: diffusion.ddim_sample(denoise, n, steps=512, prediction=prediction))(noise)
    assert abs(float(x.mean()) - MEAN) < 0.01, float(x.mean())
    assert abs(float(x.std()) - STD) < 0.01, float(x.std())


def test_training_targets_are_what_each_parameterisation_converts_back_from():
    x, noise = jnp.array([[0.5, -0.25]]), jnp.array([[1.5, 0.3]])
    logsnr = jnp.array([1.0])
    z = diffusion.add_noise(x, noise, logsnr)
    for prediction in diffusion.PREDICTIONS:
        target = diffusion.training_target(x, noise, logsnr, prediction)
        eps, x_hat = diffusion.eps_and_x(target, z, logsnr[0], prediction)
        np.testing.assert_allclose(np.asarray(eps), np.asarray(noise), atol=1e-5, err_msg=prediction)
        np.testing.assert_allclose(np.asarray(x_hat), np.asarray(x), atol=1e-5, err_msg=prediction)
    with pytest.raises(ValueError, match="prediction must be one of"):
        diffusion.training_target(x, noise, logsnr, "score")


def test_the_residual_anchor_is_the_last_history_frame_or_nothing():
    history = jnp.arange(2 * 3 * 2 * 1 * 1, dtype=jnp.float32).reshape(2, 3, 2, 1, 1)
    mask = jnp.array([[True, True, True], [False, False, False]])
    anchor = diffusion.residual_anchor(history, mask)
    assert anchor.shape == (2, 1, 2, 1, 1)
    np.testing.assert_array_equal(np.asarray(anchor[0, 0]), np.asarray(history[0, 2]))
    assert not np.asarray(anchor[1]).any()  # no history: the residual is the frames themselves
    assert diffusion.residual_anchor(history[:, :0], mask[:, :0]).shape == (2, 1, 2, 1, 1)


def test_ancestral_noise_of_an_example_depends_on_its_key_only():
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    noise = jax.random.normal(jax.random.PRNGKey(4), (3, 64))
    together = diffusion.ancestral_sample(_exact_denoiser, noise, keys, steps=16)
    alone = diffusion.ancestral_sample(_exact_denoiser, noise[1:2], keys[1:2], steps=16)
    np.testing.assert_allclose(np.asarray(together[1]), np.asarray(alone[0]), atol=1e-6)
    other = diffusion.ancestral_sample(_exact_denoiser, noise[1:2], keys[2:3], steps=16)
    assert not np.allclose(np.asarray(other), np.asarray(alone))


def test_guidance_is_equation_2_in_one_call_of_the_doubled_batch():
    calls = []

    def denoise_both(z, logsnr, drop):
        calls.append(z.shape[0])
        return jnp.where(drop[:, None], 1.0, 3.0) * jnp.ones_like(z)  # conditional 3, null condition 1

    eps = diffusion.guided(denoise_both, jnp.array([0.0, 2.0]))(jnp.zeros((2, 5)), jnp.zeros((2,)))
    np.testing.assert_allclose(np.asarray(eps), [[3.0] * 5, [(1 + 2) * 3 - 2 * 1] * 5])
    assert calls == [4]


# ------------------------------------------------------------------------------------------ checkpoints


def test_an_untrained_residual_model_copies_the_last_history_frame(untrained_residual_run):
    """Residual x-prediction (config.residual): the zero-initialised output layer predicts no change, so through
    the real sampler every generated frame is the last history frame, to the byte."""
    sim = Simulator.from_checkpoints(untrained_residual_run, sampler=SamplerSettings(steps=2), max_batch=2)
    assert sim.frames == 8 and sim.base.config.residual and sim.base.config.prediction == "x"
    history = np.random.default_rng(0).integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)
    sim.reset(history, seed=1)
    frames = sim.step(controls=[0.03, -0.02])
    assert frames.shape == (8, 24, 40, 3)
    assert all((f == history[-1]).all() for f in frames)


def test_checkpoint_paths_resolve_and_bad_ones_say_why(tiny_workdirs, tmp_path):
    base = tiny_workdirs["base"]
    assert resolve(os.path.join(base, "checkpoints", "4")) == (base, 4)
    assert resolve(os.path.join(base, "checkpoints")) == (base, None)
    stage = load_stage(os.path.join(base, "checkpoints", "4"))
    assert stage.step == 4 and stage.size == (24, 40) and not stage.super_resolution
    assert set(stage.params) == {"params"}  # the EMA parameters only
    with pytest.raises(CheckpointError, match="no run.json"):
        load_stage(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 3; there are \[4\]"):
        load_stage(os.path.join(base, "checkpoints", "3"))
    sr = load_stage(tiny_workdirs["sr"])
    assert sr.super_resolution and sr.size == (48, 80) and tuple(sr.config.lowres) == (24, 40)


# ------------------------------------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def cascade(tiny_workdirs):
    return Simulator.from_checkpoints(tiny_workdirs["base"], [tiny_workdirs["sr"]],
                                      sampler=SamplerSettings(steps=2), max_batch=4)


def _image(seed=0, size=(192, 320)):
    return (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)


def test_the_cascade_steps_deterministically_for_a_seed(cascade):
    first = cascade.reset(_image(), seed=7)
    assert first.shape == (1, 48, 80, 3) and first.dtype == np.uint8
    a = cascade.step(text="push the block 1 to the left")
    assert a.shape == (16, 48, 80, 3) and a.dtype == np.uint8
    b = cascade.step(controls=[0.01, -0.02])
    cascade.reset(_image(), seed=7)
    np.testing.assert_array_equal(cascade.step(Action(text="push the block 1 to the left")), a)
    np.testing.assert_array_equal(cascade.step(controls=[0.01, -0.02]), b)
    cascade.reset(_image(), seed=8)
    assert not np.array_equal(cascade.step(text="push the block 1 to the left"), a)


def test_sessions_batch_together_and_keep_their_own_history(cascade):
    sessions = [cascade.new_session(_image(i), seed=i) for i in range(3)]
    calls = cascade.sampler_calls
    frames = cascade.step_sessions(sessions, [Action(text="push"), Action(controls=[0.0, 0.0]),
                                              Action(text="push", controls=np.zeros((16, 2)))])
    assert cascade.sampler_calls == calls + 1  # three sessions, one sampler call (padded to a batch of 4)
    assert [f.shape for f in frames] == [(16, 48, 80, 3)] * 3
    for session, video in zip(sessions, frames):
        assert session.steps == 1 and session.history_mask.all() and session.history.shape == (4, 24, 40, 3)
        np.testing.assert_array_equal(session.last_frames, video)


def test_text_only_starts_from_white_frames_with_the_stronger_guidance(cascade):
    session = cascade.new_session(None, seed=1)
    assert session.placeholder and (session.history == 255).all() and (session.last_frames == 255).all()
    cascade.step_sessions([session], [Action(text="push the block 2 to the left")])
    assert not session.placeholder and not (session.history == 255).all()


def test_bad_actions_are_refused_before_sampling(cascade, tiny_t5_dir):
    cascade.reset(_image(), seed=0)
    calls = cascade.sampler_calls
    for action, message in [(Action(), "needs text, controls or both"),
                            (Action(text="   "), "needs text, controls or both"),
                            (Action(controls=[1.0, 2.0, 3.0]), r"controls for 'language_table' are \[2\]"),
                            (Action(controls=[np.nan, 0.0]), "NaN"),
                            (Action(controls=[0.0, 0.0], source="bridge"), "no control statistics for source")]:
        with pytest.raises(ActionError, match=message):
            cascade.step(action)
    with pytest.raises(ActionError, match="initial observation"):
        cascade.new_session(np.zeros((24, 40), np.uint8))
    assert cascade.sampler_calls == calls


def test_a_different_text_encoder_is_refused(tiny_workdirs, tmp_path):
    from unisim.samples import tiny_t5

    other = tiny_t5.write_tiny_t5(str(tmp_path / "t5"), corpus=["a different vocabulary entirely"] * 4)
    simulator = Simulator.from_checkpoints(tiny_workdirs["base"], text_encoder=other)
    simulator.reset(_image())
    with pytest.raises(ActionError, match="not the one the training data was embedded with"):
        simulator.step(text="push")


def test_super_resolution_must_match_the_stage_before(tiny_workdirs):
    with pytest.raises(ValueError, match="first stage must be a base model"):
        Simulator.from_checkpoints(tiny_workdirs["sr"])
    with pytest.raises(ValueError, match="is not a super-resolution stage"):
        Simulator.from_checkpoints(tiny_workdirs["base"], [tiny_workdirs["base"]])


# ---------------------------------------------------------------------------------------------- the CLI


def _rollout(*args):
    return subprocess.run([sys.executable, "-m", "unisim.cli", "rollout", *args], capture_output=True, text=True,
                          cwd=ROOT)


def test_unisim_rollout_writes_a_gif_and_an_mp4(tiny_workdirs, tmp_path):
    import cv2
    from PIL import Image

    image = str(tmp_path / "start.png")
    cv2.imwrite(image, _image(3))
    gif = str(tmp_path / "out.gif")
    result = _rollout("--checkpoint", tiny_workdirs["base"], "--image", image, "--actions", "push", "push the block",
                      "--controls", "0.01,0", "0,-0.01", "--steps", "2", "--output", gif)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(gif) as video:
        assert video.n_frames == 1 + 2 * 16 and video.size == (40 * 4, 24 * 4)
    mp4 = str(tmp_path / "out.mp4")
    result = _rollout("--checkpoint", os.path.join(tiny_workdirs["base"], "checkpoints", "4"), "--text_only",
                      "--actions", "push", "--steps", "2", "--output", mp4)
    assert result.returncode == 0, result.stderr[-2000:]
    capture, frames = cv2.VideoCapture(mp4), 0
    while capture.read()[0]:
        frames += 1
    assert frames == 17


def test_unisim_rollout_errors_are_one_clear_line(tiny_workdirs, tmp_path):
    result = _rollout("--checkpoint", str(tmp_path), "--text_only", "--actions", "push", "--output", "x.gif")
    assert result.returncode == 2 and "no run.json" in result.stderr
    result = _rollout("--checkpoint", tiny_workdirs["base"], "--text_only", "--actions", "a", "b", "--controls", "0,0",
                      "--output", "x.gif")
    assert result.returncode == 2 and "2 --actions but 1 --controls" in result.stderr
