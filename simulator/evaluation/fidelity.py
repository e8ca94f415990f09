"""FID / FVD: Fréchet distances between feature statistics of real and generated images / videos.

FID (Heusel et al. 2017) embeds images with an Inception-v3 network, FVD (Unterthiner et al. 2018) embeds
16-frame clips with a Kinetics-400 I3D network; both fit a Gaussian to each set of features and report

    d² = |μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)        (lower is better; UniSim reports both in Table 1)

Interface. A `FeatureNetwork` has `name`, `dim`, `input_size` (H, W), `frames` (clip length for video nets,
None for image nets) and `__call__(uint8 batch) -> float [B, dim]`; image nets take [B, H, W, 3], video nets
[B, T, H, W, 3] with T == frames. `fid` / `fvd` / `feature_stats` take uint8 arrays [N, ...] or iterables of
such batches (any size; re-batched by `batch_size`), resize every frame to the net's `input_size` with
OpenCV (INTER_AREA when shrinking both sides, bilinear otherwise; re-quantised to uint8) and accumulate
float64 sums in a streaming `FeatureStats`, so nothing but the statistics is kept. A `FeatureStats` can be
passed instead of data (e.g. reference statistics computed once).

Networks, by spec string (`feature_network(spec)`; options after `?`, e.g. `random-video?seed=1&size=32x32`):

    random-image, random-video      untrained fixed-seed random conv nets in JAX (options seed, size, frames);
                                    for tests and CPU smoke runs. Their numbers are NOT comparable to published
                                    FID/FVD values: use them only for relative comparisons within one run.
    inception:PATH                  FID Inception TorchScript `inception-2015-12-05.pt` (StyleGAN2-ADA metrics,
                                    also used by clean-fid): https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/
                                    pretrained/metrics/inception-2015-12-05.pt. Called as
                                    `net(x, return_features=True)`, x float32 [B, 3, 299, 299] in [0, 255] → [B, 2048].
    i3d:PATH                        FVD I3D TorchScript `i3d_torchscript.pt` (StyleGAN-V; a port of the TF-Hub I3D
                                    used by the original FVD code): https://www.dropbox.com/s/ge9e5ujwgetktms/
                                    i3d_torchscript.pt. Called as `net(x, rescale=False, resize=False,
                                    return_features=True)`, x float32 [B, 3, 16, 224, 224] in [−1, 1] → [B, 400]
                                    (pre-softmax logits), as in universome/fvd-comparison.
    torchscript-image:PATH          any TorchScript module called as `net(x)`: x float32 [B, 3, H, W]
    torchscript-video:PATH          (or [B, 3, T, H, W]) scaled to `range` (default 0,1); options size (default
                                    224x224), frames (default 16), range; `dim` is found with one probe call.

Download the files on a machine with internet access and pass the local path, e.g.
`fvd(real, generated, feature_network("i3d:/data/weights/i3d_torchscript.pt"))`. The conventions above are
taken from those projects' code (not verifiable here without the weights); differences remain: they resize
inside the network (StyleGAN2-ADA / StyleGAN-V) or with PIL bicubic (clean-fid), while this module resizes
with OpenCV first, and FID/FVD are biased for small sample counts, so compare numbers only at equal N.
The pytorch-fid `pt_inception-*.pth` state dict needs pytorch-fid's architecture and is not supported; wrap it
in a `FeatureNetwork` subclass if needed.
"""
from __future__ import annotations

import abc

import numpy as np

from unisim.fileio import images


# ---------------------------------------------------------------------------- Fréchet distance and statistics

def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d² between N(mu1, sigma1) and N(mu2, sigma2), in float64. Tr((Σ1Σ2)^½) is the sum of the square roots of
    the eigenvalues of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½; rounding negatives are clipped to zero."""
    mu1, mu2 = (np.asarray(m, np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(s, np.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"expected means [d] and covariances [d, d]; got {mu1.shape}, {sigma1.shape}, "
                         f"{mu2.shape}, {sigma2.shape}")
    for x in (mu1, mu2, sigma1, sigma2):
        if not np.all(np.isfinite(x)):
            raise ValueError("feature statistics contain NaN or infinity")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    w, v = np.linalg.eigh(sigma1)
    for ev in (w, np.linalg.eigvalsh(sigma2)):
        if ev.min() < -1e-6 * max(np.abs(ev).max(), 1e-300):
            raise ValueError("covariance matrices must be positive semi-definite")
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    d2 = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt
    return float(max(d2, 0.0))


class FeatureStats:
    """Streaming mean and (unbiased, ddof=1) covariance of feature vectors: float64 running sum and sum of outer
    products, taken about the first batch's mean to limit cancellation."""

    def __init__(self, dim: int | None = None):
        self.dim, self.count = dim, 0
        self._shift = self._sum = self._outer = None

    @classmethod
    def from_features(cls, features) -> "FeatureStats":
        stats = cls()
        stats.update(features)
        return stats

    def update(self, features) -> None:
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or (self.dim is not None and f.shape[1] != self.dim):
            raise ValueError(f"expected features [B, {self.dim or 'dim'}]; got shape {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("features contain NaN or infinity")
        if not len(f):
            return
        if self._shift is None:
            self.dim = f.shape[1]
            self._shift = f.mean(0)
            self._sum, self._outer = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        c = f - self._shift
        self._sum += c.sum(0)
        self._outer += c.T @ c
        self.count += len(f)

    def mean(self) -> np.ndarray:
        self._require(1)
        return self._shift + self._sum / self.count

    def cov(self) -> np.ndarray:
        self._require(2)
        m = self._sum / self.count
        cov = (self._outer - self.count * np.outer(m, m)) / (self.count - 1)
        return (cov + cov.T) / 2

    def _require(self, n: int) -> None:
        if self.count < n:
            raise ValueError(f"need at least {n} feature vectors for these statistics; have {self.count}")

    def frechet_distance(self, other: "FeatureStats") -> float:
        return frechet_distance(self.mean(), self.cov(), other.mean(), other.cov())


def features_frechet_distance(features1, features2) -> float:
    """d² between the Gaussians fitted to two feature arrays [N1, d] and [N2, d] (N1, N2 >= 2)."""
    return FeatureStats.from_features(features1).frechet_distance(FeatureStats.from_features(features2))


# ---------------------------------------------------------------------------- feature networks

class FeatureNetwork(abc.ABC):
    """Maps uint8 images [B, H, W, 3] (frames None) or videos [B, frames, H, W, 3] at `input_size` to [B, dim]."""
    name: str
    dim: int
    input_size: tuple[int, int]
    frames: int | None = None

    @abc.abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def _check(self, batch: np.ndarray) -> None:
        want = (*(() if self.frames is None else (self.frames,)), *self.input_size, 3)
        if batch.dtype != np.uint8 or batch.shape[1:] != want:
            raise ValueError(f"{self.name} takes uint8 [B, {', '.join(map(str, want))}]; got {batch.dtype} "
                             f"{batch.shape}")


class RandomConvFeatures(FeatureNetwork):
    """An untrained conv net with fixed-seed He-normal weights (JAX): stride-2 3×3 (video: 3×3×3) convolutions
    with ReLU; the features are the spatial(-temporal) means of every layer's activations, concatenated.
    Deterministic for a seed; NOT comparable to published FID/FVD — relative comparisons within a run only."""

    def __init__(self, video: bool = False, *, input_size=(64, 64), frames: int = 16, widths=(16, 32, 64),
                 seed: int = 0):
        import jax

        self.input_size, self.frames = tuple(int(s) for s in input_size), (int(frames) if video else None)
        self.dim, self.name = int(sum(widths)), f"random-{'video' if video else 'image'}(seed={seed})"
        keys, cin, self._params = jax.random.split(jax.random.PRNGKey(seed), len(widths)), 3, []
        for i, (key, cout) in enumerate(zip(keys, widths)):
            shape = (3, 3, 3, cin, cout) if video else (3, 3, cin, cout)
            w = jax.random.normal(key, shape) * np.sqrt(2.0 / (np.prod(shape[:-1])))
            self._params.append((w, (2 if i else 1, 2, 2) if video else (2, 2)))
            cin = cout
        dims = ("NTHWC", "THWIO", "NTHWC") if video else ("NHWC", "HWIO", "NHWC")
        self._forward = jax.jit(lambda x: self._apply(x, dims))

    def _apply(self, x, dims):
        import jax
        import jax.numpy as jnp

        h, outs = x.astype(jnp.float32) / 127.5 - 1, []
        for w, strides in self._params:
            h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, strides, "SAME", dimension_numbers=dims))
            outs.append(h.mean(axis=tuple(range(1, h.ndim - 1))))
        return jnp.concatenate(outs, axis=-1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        return np.asarray(self._forward(batch), np.float64)


class TorchScriptFeatures(FeatureNetwork):
    """A TorchScript feature network (CPU or `device`): uint8 input → float32 [B, 3, H, W] or [B, 3, T, H, W]
    scaled linearly from [0, 255] to `value_range`, called with `call_kwargs`, output flattened to [B, dim]."""

    def __init__(self, path: str, *, input_size, frames: int | None = None, value_range=(0.0, 1.0),
                 call_kwargs: dict | None = None, dim: int | None = None, name: str | None = None,
                 device: str = "cpu"):
        import torch

        self._torch, self.device = torch, device
        self.module = torch.jit.load(path, map_location=device).eval()
        self.input_size, self.frames = tuple(int(s) for s in input_size), frames
        self.value_range, self.call_kwargs = tuple(float(v) for v in value_range), dict(call_kwargs or {})
        self.name, self.dim = name or f"torchscript:{path}", -1
        shape = (1, *(() if frames is None else (frames,)), *self.input_size, 3)
        probe = self._run(np.zeros(shape, np.uint8)).shape[1] if dim is None else dim
        self.dim = int(probe)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        lo, hi = self.value_range
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, torch.float32) * ((hi - lo) / 255) + lo
        x = x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)  # channels first: BCTHW / BCHW
        with torch.no_grad():
            out = self.module(x.contiguous(), **self.call_kwargs)
        return out.detach().to("cpu", torch.float64).numpy().reshape(len(batch), -1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._check(batch)
        out = self._run(batch)
        if out.shape[1] != self.dim:
            raise ValueError(f"{self.name} returned {out.shape[1]} features per item; expected {self.dim}")
        return out


def _parse_options(text: str) -> dict[str, str]:
    items = [kv.split("=", 1) for kv in text.split("&") if kv]
    if any(len(kv) != 2 for kv in items):
        raise ValueError(f"bad options {text!r}: expected key=value pairs joined by '&'")
    return dict(items)


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def feature_network(spec: str, device: str = "cpu") -> FeatureNetwork:
    """A feature network from a spec string (see the module docstring): random-image, random-video,
    inception:PATH, i3d:PATH, torchscript-image:PATH, torchscript-video:PATH, with optional `?key=value&...`."""
    head, _, query = spec.partition("?")
    kind, _, path = head.partition(":")
    opts, allowed = _parse_options(query), {"random-image": {"seed", "size"},
                                            "random-video": {"seed", "size", "frames"},
                                            "inception": set(), "i3d": set(), "torchscript-image": {"size", "range"},
                                            "torchscript-video": {"size", "frames", "range"}}
    if kind not in allowed:
        raise ValueError(f"unknown feature network {spec!r}; known: {', '.join(allowed)}")
    if set(opts) - allowed[kind]:
        raise ValueError(f"{kind} takes options {sorted(allowed[kind])}; got {sorted(opts)}")
    if kind.startswith("random"):
        if path:
            raise ValueError(f"{kind} takes no path; got {spec!r}")
        return RandomConvFeatures(kind == "random-video", input_size=_size(opts.get("size", "64")),
                                  frames=int(opts.get("frames", 16)), seed=int(opts.get("seed", 0)))
    if not path:
        raise ValueError(f"{kind} needs a file: {kind}:/path/to/weights")
    if kind == "inception":
        return TorchScriptFeatures(path, input_size=(299, 299), value_range=(0, 255), dim=2048, device=device,
                                   call_kwargs={"return_features": True}, name="inception-2015-12-05")
    if kind == "i3d":
        return TorchScriptFeatures(path, input_size=(224, 224), frames=16, value_range=(-1, 1), dim=400,
                                   call_kwargs={"rescale": False, "resize": False, "return_features": True},
                                   name="i3d-kinetics400", device=device)
    lo, hi = (float(v) for v in opts.get("range", "0,1").split(","))
    return TorchScriptFeatures(path, input_size=_size(opts.get("size", "224")), value_range=(lo, hi),
                               frames=int(opts.get("frames", 16)) if kind.endswith("video") else None,
                               device=device, name=f"{kind}:{path}")


# ---------------------------------------------------------------------------- metrics

def feature_stats(data, net: FeatureNetwork, *, batch_size: int = 16) -> FeatureStats:
    """Streams uint8 images [N, H, W, 3] / videos [N, T, H, W, 3] (an array or an iterable of batches) through
    `net` and returns their FeatureStats. Frames are resized to `net.input_size`; videos need T == net.frames."""
    if isinstance(data, FeatureStats):
        if data.dim != net.dim:
            raise ValueError(f"statistics have dim {data.dim}; {net.name} gives {net.dim}")
        return data
    stats, ndim = FeatureStats(net.dim), 4 if net.frames is None else 5
    for batch in [data] if isinstance(data, np.ndarray) else data:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != ndim or batch.shape[-1] != 3:
            what = "images [N, H, W, 3]" if ndim == 4 else "videos [N, T, H, W, 3]"
            raise ValueError(f"{net.name} needs uint8 RGB {what}; got {batch.dtype} {batch.shape}")
        if ndim == 5 and batch.shape[1] != net.frames:
            raise ValueError(f"{net.name} takes clips of {net.frames} frames; got {batch.shape[1]} "
                             "(crop or subsample the videos first)")
        for i in range(0, len(batch), batch_size):
            stats.update(net(images.resize(batch[i:i + batch_size], net.input_size)))
    return stats


def _distance(real, generated, net, batch_size: int, video: bool) -> float:
    net = feature_network(net) if isinstance(net, str) else net
    if (net.frames is not None) != video:
        raise ValueError(f"{'fvd' if video else 'fid'} needs {'a video' if video else 'an image'} feature "
                         f"network; {net.name} is not one")
    return feature_stats(real, net, batch_size=batch_size).frechet_distance(
        feature_stats(generated, net, batch_size=batch_size))


def fid(real_images, generated_images, net: FeatureNetwork | str, *, batch_size: int = 32) -> float:
    """FID-style d² between uint8 image sets [N, H, W, 3] (arrays, iterables of batches or FeatureStats)."""
    return _distance(real_images, generated_images, net, batch_size, video=False)


def fvd(real_videos, generated_videos, net: FeatureNetwork | str, *, batch_size: int = 8) -> float:
    """FVD-style d² between uint8 video sets [N, T, H, W, 3] (arrays, iterables of batches or FeatureStats)."""
    return _distance(real_videos, generated_videos, net, batch_size, video=True)
