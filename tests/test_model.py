"""trainer/model.py and trainer/diffusion.py: shapes, conditioning and guidance, the schedule, and a loss that falls."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unisim.trainer import diffusion
from unisim.trainer.model import Conditioning, ModelConfig, VideoUNet

TINY = ModelConfig(channels=8, channel_mult=(1, 2), blocks_per_resolution=1, attention_resolutions=(6,),
                   attention_heads=(2,), cond_dim=16, cond_mlp_layers=2, groups=4, dropout=0.0)
B, T, H, W = 2, 4, 12, 20


def conditioning(seed=0, drop=(False, False)):
    rng = np.random.default_rng(seed)
    return Conditioning(history=jnp.asarray(rng.uniform(-1, 1, (B, 4, H, W, 3)), jnp.float32),
                        history_mask=jnp.array([[True] * 4, [False, False, True, True]]),
                        text=jnp.asarray(rng.normal(size=(B, 8, 12)), jnp.float32),
                        text_mask=jnp.array([[True] * 5 + [False] * 3] * B),
                        controls=jnp.asarray(rng.integers(0, 4096, (B, T, 2)), jnp.int32),
                        control_mask=jnp.ones((B, T, 2), bool), drop=jnp.array(drop))


@pytest.fixture(scope="module")
def model_and_params():
    model = VideoUNet(TINY)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)), conditioning())
    return model, _perturbed(params)


def _perturbed(params):
    """Zero-initialised output layers make a fresh model ignore its inputs; perturb every weight to test wiring."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_the_schedule_is_clipped_cosine_and_variance_preserving():
    t = jnp.linspace(0, 1, 101)
    logsnr = diffusion.cosine_logsnr(t)
    assert float(logsnr[0]) == pytest.approx(20, abs=1e-3) and float(logsnr[-1]) == pytest.approx(-20, abs=1e-3)
    assert bool(jnp.all(jnp.diff(logsnr) < 0))
    alpha, sigma = diffusion.alpha_sigma(logsnr)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1, atol=1e-6)
    assert float(diffusion.cosine_logsnr(jnp.array(0.5))) == pytest.approx(0, abs=1e-4)  # the midpoint: SNR 1


def test_outputs_follow_the_condition_unless_it_is_dropped(model_and_params):
    model, params = model_and_params
    apply = jax.jit(model.apply)
    noisy, logsnr = jnp.ones((B, T, H, W, 3)) * 0.3, jnp.array([1.0, -2.0])
    base = apply(params, noisy, logsnr, conditioning(0))
    assert base.shape == (B, T, H, W, 3) and bool(jnp.all(jnp.isfinite(base)))
    other_text = conditioning(0)
    other_text.text = other_text.text + 1.0
    assert float(jnp.abs(apply(params, noisy, logsnr, other_text) - base).max()) > 1e-4
    dropped, dropped_other = conditioning(0, (True, True)), conditioning(0, (True, True))
    dropped_other.text, dropped_other.controls = dropped_other.text + 1.0, dropped_other.controls // 2
    np.testing.assert_allclose(apply(params, noisy, logsnr, dropped), apply(params, noisy, logsnr, dropped_other),
                               atol=1e-5)  # the null condition ignores text and controls
    other_history = conditioning(0, (True, True))
    other_history.history = -other_history.history
    difference = apply(params, noisy, logsnr, other_history) - apply(params, noisy, logsnr, dropped)
    assert float(jnp.abs(difference).max()) > 1e-4


def test_super_resolution_blocks_use_temporal_convolution_not_attention():
    config = ModelConfig(**{**TINY.__dict__, "temporal": "conv"})
    shapes = jax.eval_shape(VideoUNet(config).init, jax.random.PRNGKey(0), jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)),
                            conditioning())
    names = jax.tree_util.tree_flatten_with_path(shapes)[0]
    paths = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in names]
    assert not any("TemporalAttention" in p for p in paths) and any("Conv_2" in p for p in paths)


def test_the_paper_shaped_model_builds_at_reduced_width():
    config = ModelConfig(channels=64)  # Table 6 structure (1, 2, 4 × 3 blocks, attention at 6/12/24), 1/16 width
    shapes = jax.eval_shape(VideoUNet(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 24, 40, 3)),
                            jnp.zeros((1,)), Conditioning(
                                history=jnp.zeros((1, 4, 24, 40, 3)), history_mask=jnp.ones((1, 4), bool),
                                text=jnp.zeros((1, 64, 4096)), text_mask=jnp.ones((1, 64), bool),
                                controls=jnp.zeros((1, 16, 2), jnp.int32), control_mask=jnp.ones((1, 16, 2), bool),
                                drop=jnp.zeros((1,), bool)))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert 50e6 < count < 500e6  # dominated by the 4096-wide conditioning MLP and bin embedding


def test_a_few_adam_steps_lower_the_denoising_loss():
    model = VideoUNet(TINY)
    cond = conditioning(3)
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (B, T, H, W, 3)), jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.zeros((B,)), cond)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)
    noise = jax.random.normal(jax.random.PRNGKey(5), x.shape)
    logsnr = jnp.array([0.0, 2.0])
    frame_mask = jnp.ones((B, T))

    def loss_fn(p):
        return diffusion.masked_mse(model.apply(p, diffusion.add_noise(x, noise, logsnr), logsnr, cond), noise,
                                    frame_mask)

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for _ in range(25):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses


def test_any_base_width_builds_even_where_skip_concatenations_are_not_multiples_of_the_groups():
    config = ModelConfig(**{**TINY.__dict__, "channels": 12, "groups": 8})  # widths 12, 24 and 36 after concat
    shapes = jax.eval_shape(VideoUNet(config).init, jax.random.PRNGKey(0), jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)),
                            conditioning())
    assert sum(x.size for x in jax.tree.leaves(shapes)) > 0


def test_each_frame_tells_its_own_control_from_the_others(model_and_params):
    """Swapping two frames' controls changes the output: the tokens carry their target frame, and each frame's
    embedding its own action and the ones before it (a set of tokens without order could not tell them apart)."""
    model, params = model_and_params
    apply = jax.jit(model.apply)
    noisy, logsnr = jnp.ones((B, T, H, W, 3)) * 0.3, jnp.array([1.0, -2.0])
    cond = conditioning(0)
    swapped = conditioning(0)
    swapped.controls = cond.controls[:, ::-1]
    assert float(jnp.abs(apply(params, noisy, logsnr, swapped) - apply(params, noisy, logsnr, cond)).max()) > 1e-4
    # Without the per-frame path the order still reaches the model, through the tokens' frame embedding.
    no_frames = VideoUNet(ModelConfig(**{**TINY.__dict__, "frame_controls": False}))
    p = _perturbed(jax.jit(no_frames.init)(jax.random.PRNGKey(0), noisy, logsnr, cond))
    assert float(jnp.abs(no_frames.apply(p, noisy, logsnr, swapped) - no_frames.apply(p, noisy, logsnr, cond)).max()) \
        > 1e-4


def test_control_values_embed_smoothly_across_neighbouring_bins():
    """"value" embeds a bin from its centre, so bins 2000 and 2001 get close vectors and bin 100 a distant one;
    "bins" (a vector per bin) has no notion of neighbours."""
    from unisim.trainer.model import ConditionEncoder

    def tokens(embedding, bins):
        encoder = ConditionEncoder(ModelConfig(**{**TINY.__dict__, "control_embedding": embedding}))
        cond = conditioning(0)
        params = encoder.init(jax.random.PRNGKey(0), cond)
        out = []
        for b in bins:
            cond.controls = jnp.full((B, T, 2), b, jnp.int32)
            out.append(encoder.apply(params, cond)[0][:, -T * 2:])  # the control tokens
        return out

    for embedding, smooth in (("value", True), ("bins", False)):
        near, next_bin, far = tokens(embedding, (2000, 2001, 100))
        ratio = float(jnp.linalg.norm(near - next_bin) / jnp.linalg.norm(near - far))
        assert (ratio < 0.2) if smooth else (ratio > 0.5), (embedding, ratio)  # measured: 0.08 and ~1
    with pytest.raises(ValueError, match="control_embedding must be"):
        tokens("onehot", (1,))


def test_patches_fold_into_channels_and_back():
    from unisim.trainer.model import depth_to_space, space_to_depth

    x = jnp.arange(2 * 3 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 3, 8, 12, 3)
    folded = space_to_depth(x, 4)
    assert folded.shape == (2, 3, 2, 3, 48)
    np.testing.assert_array_equal(np.asarray(folded[0, 0, 1, 2, :3]), np.asarray(x[0, 0, 4, 8]))  # a patch's corner
    np.testing.assert_array_equal(np.asarray(depth_to_space(folded, 4)), np.asarray(x))
    config = ModelConfig(**{**TINY.__dict__, "patch_size": 2, "attention_resolutions": (3,)})
    shapes = jax.eval_shape(VideoUNet(config).init, jax.random.PRNGKey(0), jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)),
                            conditioning())
    out = jax.eval_shape(lambda p: VideoUNet(config).apply(p, jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)),
                                                          conditioning()), shapes)
    assert out.shape == (B, T, H, W, 3)
    with pytest.raises(ValueError, match="do not split into 8×8 patches"):
        jax.eval_shape(VideoUNet(ModelConfig(**{**TINY.__dict__, "patch_size": 8})).init, jax.random.PRNGKey(0),
                       jnp.zeros((B, T, H, W, 3)), jnp.zeros((B,)), conditioning())


def test_the_residual_anchor_is_the_clean_or_the_conditioned_last_history_frame():
    """config.noisy_anchor: the anchor is the conditioning's last history frame, condition noise included, in
    training and sampling alike (trainer/stage.py); otherwise the clean frame."""
    import ml_collections

    from unisim.trainer import stage

    history = np.random.default_rng(0).integers(0, 256, (2, 4, H, W, 3), dtype=np.uint8)
    mask = jnp.ones((2, 4), bool)
    parts = {"history": history, "history_mask": mask, "text": jnp.zeros((2, 8, 12)),
             "text_mask": jnp.ones((2, 8), bool), "controls": jnp.zeros((2, T, 2), jnp.int32),
             "control_mask": jnp.ones((2, T, 2), bool)}
    config = ml_collections.ConfigDict({"residual": True, "noisy_anchor": False, "condition_noise": 0.1,
                                        "stage": "base"})
    cond = stage.conditioning(config, parts, jnp.zeros((2,), bool), jax.random.split(jax.random.PRNGKey(3), 2))
    clean = stage.anchor(config, history, mask, cond)
    np.testing.assert_allclose(clean, stage.to_unit(history)[:, -1:], atol=1e-6)
    config.noisy_anchor = True
    noisy = stage.anchor(config, history, mask, cond)
    np.testing.assert_allclose(noisy, cond.history[:, -1:], atol=1e-6)
    assert 0.05 < float(jnp.std(noisy - clean)) < 0.15  # the condition noise, std 0.1
    with pytest.raises(ValueError, match="noisy_anchor"):
        stage.anchor(config, history, mask)
