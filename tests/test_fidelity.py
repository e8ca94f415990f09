"""FID/FVD machinery: the Fréchet distance against closed forms, the streaming statistics, the random JAX feature
networks (identity → 0, monotonic in corruption), and the TorchScript loader with tiny scripted modules."""
import numpy as np
import pytest
import torch

from unisim.simulator.evaluation.fidelity import (FeatureStats, RandomConvFeatures, TorchScriptFeatures,
                                                  feature_network, feature_stats, features_frechet_distance, fid,
                                                  frechet_distance, fvd)


def _diag_closed_form(mu1, var1, mu2, var2):
    return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------------------- Fréchet distance

def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    var1, var2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(_diag_closed_form(mu1, var1, mu2, var2), rel=1e-10)


def test_frechet_distance_full_covariance_closed_forms():
    rng = np.random.default_rng(1)
    sigma, mu = _random_cov(rng, 12), rng.normal(size=12)
    # Σ2 = c Σ1 commutes with Σ1: Tr((Σ1Σ2)^½) = √c Tr Σ1, so d² = |Δμ|² + (1 + c − 2√c) Tr Σ1.
    c, shift = 2.5, rng.normal(size=12)
    want = np.sum(shift ** 2) + (1 + c - 2 * np.sqrt(c)) * np.trace(sigma)
    assert frechet_distance(mu, sigma, mu + shift, c * sigma) == pytest.approx(want, rel=1e-9)
    # Rotating both diagonal covariances by the same orthogonal matrix changes nothing.
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    var1, var2 = rng.uniform(0.1, 2, 12), rng.uniform(0.1, 2, 12)
    got = frechet_distance(mu, q @ np.diag(var1) @ q.T, mu + shift, q @ np.diag(var2) @ q.T)
    assert got == pytest.approx(_diag_closed_form(mu, var1, mu + shift, var2), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    s1, s2, mu1, mu2 = _random_cov(rng, 10), _random_cov(rng, 10), rng.normal(size=10), rng.normal(size=10)
    root = np.real(linalg.sqrtm(s1 @ s2))
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)


def test_empirical_gaussians_approach_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2, var1, var2 = np.zeros(4), np.array([1.0, 0, -0.5, 0]), np.ones(4), np.array([1, 4, 0.25, 1.0])
    a = rng.normal(mu1, np.sqrt(var1), size=(40000, 4))
    b = rng.normal(mu2, np.sqrt(var2), size=(40000, 4))
    assert features_frechet_distance(a, b) == pytest.approx(_diag_closed_form(mu1, var1, mu2, var2), abs=0.05)


def test_frechet_distance_zero_symmetric_and_grows_with_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(60, 16)) * 1.3
    assert features_frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert features_frechet_distance(a, b) == pytest.approx(features_frechet_distance(b, a), rel=1e-9)
    # rank-deficient covariances (fewer samples than dimensions) still give a clean zero and finite values
    c = rng.normal(size=(5, 64))
    assert features_frechet_distance(c, c) == pytest.approx(0, abs=1e-9)
    distances = [features_frechet_distance(a, a + s) for s in (0.1, 0.5, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0
    assert distances[2] == pytest.approx(16 * 4.0, rel=1e-9)  # a pure shift: d² = |Δμ|²


def test_frechet_distance_refuses_bad_input():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="at least 2"):
        features_frechet_distance(rng.normal(size=(1, 3)), rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        features_frechet_distance(np.full((4, 3), np.nan), rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        frechet_distance(np.zeros(2), np.diag([1, np.inf]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"features \[B, 3\]"):
        FeatureStats(3).update(np.zeros((4, 5)))


def test_streaming_stats_equal_batch_computation():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(301, 20)) * rng.uniform(0.1, 5, 20) + 1e4  # a large offset tests the cancellation guard
    stats = FeatureStats()
    for i in range(0, len(x), 37):
        stats.update(x[i:i + 37])
    assert stats.count == 301
    np.testing.assert_allclose(stats.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    y = rng.normal(size=(90, 20)) + 1e4
    assert stats.frechet_distance(FeatureStats.from_features(y)) == pytest.approx(
        frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)), rel=1e-8)


# ---------------------------------------------------------------------------- random feature networks

def _scenes(rng, n, shape):
    """Smooth random colour fields (uint8): blobs built at 1/4 resolution and enlarged."""
    coarse = rng.uniform(0, 255, size=(n, *shape[:-3], shape[-3] // 4, shape[-2] // 4, 3)).astype(np.uint8)
    return coarse.repeat(4, axis=-3).repeat(4, axis=-2)


def _noised(x, rng, sigma):
    return np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)


def test_random_image_network_is_deterministic_and_checks_input():
    net, again = feature_network("random-image"), RandomConvFeatures(input_size=(64, 64), seed=0)
    x = _scenes(np.random.default_rng(7), 3, (64, 64, 3))
    assert net.dim == 112 and net.frames is None and net.input_size == (64, 64)
    np.testing.assert_array_equal(net(x), again(x))
    assert not np.allclose(net(x), feature_network("random-image?seed=1")(x))
    with pytest.raises(ValueError, match="uint8"):
        net(x[:, :32])


def test_fid_random_network_zero_for_identical_and_monotonic_in_corruption():
    rng = np.random.default_rng(8)
    real = _scenes(rng, 48, (48, 80, 3))  # resized (area) to the net's 64×64
    net = feature_network("random-image")
    assert fid(real, real, net, batch_size=16) == pytest.approx(0, abs=1e-6)
    scores = [fid(real, _noised(real, rng, s), net) for s in (4, 16, 48)]
    assert 0 < scores[0] < scores[1] < scores[2]
    # iterables of batches of any size give the same statistics as one array
    batches = (real[i:i + 10] for i in range(0, 48, 10))
    np.testing.assert_allclose(feature_stats(batches, net).cov(), feature_stats(real, net).cov(), atol=1e-9)


def test_fvd_random_network_on_small_videos():
    rng = np.random.default_rng(9)
    real = _scenes(rng, 24, (16, 24, 40, 3))  # 16 frames of 24×40, enlarged (bilinear) to 32×32
    net = feature_network("random-video?size=32x32")
    assert net.frames == 16 and net.input_size == (32, 32)
    real_stats = feature_stats(real, net)
    assert fvd(real_stats, real, net) == pytest.approx(0, abs=1e-6)
    frozen = np.repeat(real[:, :1], 16, axis=1)  # a static clip: the temporal corruption FVD is meant to see
    scores = [fvd(real_stats, _noised(real, rng, s), net) for s in (4, 32)] + [fvd(real_stats, frozen, net)]
    assert 0 < scores[0] < scores[1] and scores[2] > scores[0]
    with pytest.raises(ValueError, match="16 frames"):
        fvd(real, real[:, :8], net)
    with pytest.raises(ValueError, match="video feature network"):
        fvd(real, real, feature_network("random-image"))
    with pytest.raises(ValueError, match="uint8 RGB"):
        fvd(real.astype(np.float32), real, net)


def test_feature_network_spec_errors():
    for spec, match in [("nope", "unknown feature network"), ("i3d", "needs a file"),
                        ("random-image:/x", "no path"), ("random-image?depth=3", "takes options"),
                        ("random-video?seed", "key=value")]:
        with pytest.raises(ValueError, match=match):
            feature_network(spec)
    with pytest.raises(ValueError):  # a missing TorchScript file is torch's error, surfaced as is
        feature_network("inception:/nonexistent/inception-2015-12-05.pt")


# ---------------------------------------------------------------------------- TorchScript loading

class _TinyI3D(torch.nn.Module):
    """Mimics the StyleGAN-V I3D TorchScript's call: x [B, 3, T, 224, 224] in [-1, 1] plus keyword flags."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 2 * 4 * 4, 400)

    def forward(self, x, rescale: bool = True, resize: bool = True, return_features: bool = False):
        assert not rescale and not resize and return_features
        assert x.shape[1] == 3 and x.shape[2] == 16 and x.shape[3] == 224 and x.shape[4] == 224
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (2, 4, 4)).flatten(1)
        return torch.tanh(self.proj(pooled))


class _TinyImageNet(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x[:, :, ::4, ::4].flatten(1)[:, :10]], dim=1)


def test_torchscript_i3d_preset_conventions(tmp_path):
    path = str(tmp_path / "i3d_torchscript.pt")
    torch.jit.script(_TinyI3D()).save(path)
    net = feature_network(f"i3d:{path}")
    assert (net.dim, net.frames, net.input_size) == (400, 16, (224, 224))
    rng = np.random.default_rng(10)
    videos = _scenes(rng, 3, (16, 224, 224, 3))
    # the wrapper's output equals the module run by hand on BCTHW float input scaled to [-1, 1]
    by_hand = torch.jit.load(path)(torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1,
                                   rescale=False, resize=False, return_features=True)
    np.testing.assert_allclose(net(videos), by_hand.detach().numpy(), rtol=1e-5, atol=1e-6)
    small = _scenes(rng, 6, (16, 24, 40, 3))  # enlarged to 224×224 by fvd
    assert fvd(small, small, net, batch_size=4) == pytest.approx(0, abs=1e-6)
    assert fvd(small, _noised(small, rng, 60), net, batch_size=4) > 1e-4


def test_torchscript_generic_image_spec_probes_dim(tmp_path):
    path = str(tmp_path / "tiny.pt")
    torch.jit.script(_TinyImageNet()).save(path)
    net = feature_network(f"torchscript-image:{path}?size=32x48&range=0,255")
    assert isinstance(net, TorchScriptFeatures) and net.dim == 16 and net.input_size == (32, 48)
    rng = np.random.default_rng(11)
    images = _scenes(rng, 20, (64, 96, 3))
    assert fid(images, images, net) == pytest.approx(0, abs=1e-6)
    assert fid(images, _noised(images, rng, 40), net) > fid(images, _noised(images, rng, 5), net) > 0
    features = net(images[:2, ::2, ::2])
    np.testing.assert_allclose(features[:, :3], images[:2, ::2, ::2].reshape(2, -1, 3).mean(1), rtol=1e-5)
