"""Continuous controls → 4096 uniform bins, and back.

Per dataset and per control dimension the pipeline computes robust bounds — by default the 1st and 99th
percentiles of all finite values, so a few outliers do not stretch the range — and stores them in the manifest as
`ControlStats`. A value is clipped to [low, high] and mapped to bin

    token = min(floor((x - low) / (high - low) * 4096), 4095)

and a token decodes to its bin centre, `low + (token + 0.5) * (high - low) / 4096`. For a value inside the bounds
the round-trip error is therefore at most half a bin, `(high - low) / 8192` per dimension (`max_error()`); a value
outside is first clipped, adding its distance to the bound. A dimension with high == low (a constant control)
maps every value to token 0, which decodes to `low`.

The statistics are computed in bounded memory and deterministically (`ControlSample`): every control row gets a
64-bit hash of (episode id, row index), and the percentiles, mean and std come from the `capacity` rows with the
smallest hashes — all rows, exactly, when a dataset has no more than that (`percentile_rows == count`). Above it
the rows are a hash-uniform sample without replacement of `percentile_rows` rows, and by the Dvoretzky–Kiefer–
Wolfowitz inequality the empirical distribution is within ε = sqrt(ln(2/δ) / (2 · percentile_rows)) of the
data's in rank everywhere with probability ≥ 1 − δ: at the default 2^20 rows and δ = 1e-6, the 1st percentile
stored is the value of some rank within 1 ± 0.26 % of the data (`rank_error_bound`). `count`, `min` and `max` are
always exact. The sample is the same set whatever order or grouping the rows arrive in, so reruns give equal bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

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
    percentile_rows: int = 0  # rows low/high/mean/std come from: `count` when exact, else a sample (see above)

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
                   std=as_tuple(values.std(0)), min=as_tuple(values.min(0)), max=as_tuple(values.max(0)),
                   percentile_rows=int(values.shape[0]))

    def rank_error_bound(self, delta: float = 1e-6) -> float:
        """With probability >= 1 - delta, the stored percentiles are within this fraction of the data in rank."""
        if self.percentile_rows >= self.count:
            return 0.0
        return math.sqrt(math.log(2 / delta) / (2 * self.percentile_rows))

    def to_json(self) -> dict:
        return {field.name: (list(v) if isinstance(v := getattr(self, field.name), tuple) else v)
                for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> "ControlStats":
        data = {"percentile_rows": data["count"], **data}  # manifests from before sampling: exact
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


DEFAULT_SAMPLE_ROWS = 1 << 20  # 4 MiB per control dimension, plus 8 MiB of hashes
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_hashes(episode_id: str, rows: np.ndarray) -> np.ndarray:
    """A stable 64-bit hash per (episode id, row index): blake2b of the id, mixed with the row by splitmix64."""
    base = np.uint64(int.from_bytes(hashlib.blake2b(episode_id.encode(), digest_size=8).digest(), "big"))
    with np.errstate(over="ignore"):  # the mixing is arithmetic modulo 2^64
        x = base ^ ((np.asarray(rows, np.uint64) + np.uint64(1)) * _GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class ControlSample:
    """The `capacity` rows with the smallest hashes, plus exact count, min and max: a mergeable, order-independent
    summary of any number of control rows in O(capacity) memory (module docstring for the error bound)."""

    def __init__(self, dims: int, capacity: int = DEFAULT_SAMPLE_ROWS):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.dims, self.capacity = dims, capacity
        self.count = 0
        self.min = np.full(dims, np.inf, np.float32)
        self.max = np.full(dims, -np.inf, np.float32)
        self._hashes = [np.zeros(0, np.uint64)]
        self._rows = [np.zeros((0, dims), np.float32)]
        self._held = 0

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> "ControlSample":
        rows = np.asarray(rows, np.float32).reshape(-1, self.dims)
        finite = np.isfinite(rows).all(axis=1)
        rows, hashes = rows[finite], np.asarray(hashes, np.uint64)[finite]
        if rows.shape[0]:
            self.count += rows.shape[0]
            self.min, self.max = np.minimum(self.min, rows.min(0)), np.maximum(self.max, rows.max(0))
            self._hashes.append(hashes)
            self._rows.append(rows)
            self._held += rows.shape[0]
            if self._held > 2 * self.capacity:  # prune in batches: amortised O(1) per row
                self._prune()
        return self

    def merge(self, other: "ControlSample") -> "ControlSample":
        self.count += other.count
        self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self._hashes.extend(other._hashes)
        self._rows.extend(other._rows)
        self._held += other._held
        if self._held > 2 * self.capacity:
            self._prune()
        return self

    def sample(self) -> np.ndarray:
        """The kept rows [min(count, capacity), D], in hash order."""
        self._prune()
        return self._rows[0]

    def _prune(self) -> None:
        hashes, rows = np.concatenate(self._hashes), np.concatenate(self._rows)
        # Hash first, then the row's values: a total order, so equal hashes cannot make the kept set vary.
        order = np.lexsort((*rows.T[::-1], hashes))[: self.capacity]
        self._hashes, self._rows, self._held = [hashes[order]], [rows[order]], len(order)

    def stats(self, names, low_percentile: float, high_percentile: float) -> ControlStats | None:
        """The statistics (None when no finite row was seen); percentiles from the sample, count/min/max exact."""
        if self.count == 0:
            return None
        values = np.sort(self.sample(), axis=0)  # sorted: mean/std sum in a fixed order
        stats = ControlStats.from_values(names, values, low_percentile, high_percentile)
        as_tuple = lambda a: tuple(float(v) for v in a)  # noqa: E731
        return dataclasses.replace(stats, count=self.count, min=as_tuple(self.min), max=as_tuple(self.max))


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
        unit = ((np.clip(values.astype(np.float64), self.low, self.high) - self.low)
                / np.where(self.width > 0, self.width, 1.0))
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
