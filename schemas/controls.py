"""Continuous controls → 4096 uniform bins, and back.

Per dataset and per control dimension the pipeline computes robust bounds — by default the 1st and 99th
percentiles of all finite values, so a few outliers do not stretch the range — and stores them in the manifest as
`ControlStats`. A value is clipped to [low, high] and mapped to bin

    token = min(floor((x - low) / (high - low) * 4096), 4095)

and a token decodes to its bin centre, `low + (token + 0.5) * (high - low) / 4096`. For a value inside the bounds
the round-trip error is therefore at most half a bin, `(high - low) / 8192` per dimension (`max_error()`); a value
outside is first clipped, adding its distance to the bound. A dimension with high == low (a constant control)
maps every value to token 0, which decodes to `low`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unisim.schemas.record import NUM_CONTROL_BINS


@dataclasses.dataclass(frozen=True)
class ControlStats:
    """Normalisation statistics of one dataset's controls, as saved in the manifest under "control_stats"."""

    names: tuple[str, ...]
    low: tuple[float, ...]  # the `low_percentile` percentile per dimension: the bottom of bin 0
    high: tuple[float, ...]  # the `high_percentile` percentile per dimension: the top of bin 4095
    low_percentile: float
    high_percentile: float
    count: int  # control rows (frames) the statistics were computed from
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    num_bins: int = NUM_CONTROL_BINS

    @property
    def dims(self) -> int:
        return len(self.names)

    @classmethod
    def from_values(cls, names, values: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.0):
        """Statistics of `values` [N, D]; rows with any non-finite value are ignored."""
        values = np.asarray(values, np.float64).reshape(-1, len(names))
        values = values[np.isfinite(values).all(axis=1)]
        if values.shape[0] == 0:
            raise ValueError("no finite control values to compute statistics from")
        low, high = np.percentile(values, [low_percentile, high_percentile], axis=0)
        as_tuple = lambda a: tuple(float(np.float32(v)) for v in a)  # noqa: E731  float32 values: what the tokenizer uses
        return cls(names=tuple(names), low=as_tuple(low), high=as_tuple(high), low_percentile=float(low_percentile),
                   high_percentile=float(high_percentile), count=int(values.shape[0]), mean=as_tuple(values.mean(0)),
                   std=as_tuple(values.std(0)), min=as_tuple(values.min(0)), max=as_tuple(values.max(0)))

    def to_json(self) -> dict:
        return {field.name: (list(v) if isinstance(v := getattr(self, field.name), tuple) else v)
                for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> "ControlStats":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


class ControlTokenizer:
    """Maps controls [..., D] to uint16 tokens in [0, num_bins) and back, with the bounds of `ControlStats`."""

    def __init__(self, stats: ControlStats):
        self.stats = stats
        self.num_bins = stats.num_bins
        # float64 arithmetic so that a value on a bin edge is not pushed into the neighbouring bin by float32
        # rounding; the bounds themselves are the float32 values stored in the manifest.
        self.low = np.asarray(stats.low, np.float32).astype(np.float64)
        self.high = np.asarray(stats.high, np.float32).astype(np.float64)
        self.width = self.high - self.low
        if (self.width < 0).any():
            raise ValueError(f"control bounds have high < low: low={stats.low}, high={stats.high}")

    def encode(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float32)
        if values.shape[-1:] != (len(self.low),):
            raise ValueError(f"controls have {values.shape[-1:]} dims, statistics have {len(self.low)}")
        if not np.isfinite(values).all():
            raise ValueError("controls contain NaN or infinite values")
        unit = (np.clip(values.astype(np.float64), self.low, self.high) - self.low) / np.where(self.width > 0, self.width, 1.0)
        tokens = np.floor(unit * self.num_bins)
        tokens = np.where(self.width > 0, tokens, 0)
        return np.clip(tokens, 0, self.num_bins - 1).astype(np.uint16)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.num_bins):
            raise ValueError(f"tokens must lie in [0, {self.num_bins})")
        centres = self.low + (tokens.astype(np.float64) + 0.5) * (self.width / self.num_bins)
        return np.where(self.width > 0, centres, self.low).astype(np.float32)

    def max_error(self) -> np.ndarray:
        """Largest |decode(encode(x)) - x| per dimension for x inside [low, high]: half a bin."""
        return self.width / (2 * self.num_bins)
