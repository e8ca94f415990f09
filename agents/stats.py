"""Intervals for the figures agents are judged by: a success rate's (Wilson) and a mean's (normal)."""

from __future__ import annotations

import math

import numpy as np


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % at z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values, z: float = 1.96) -> tuple[float, float]:
    """The normal 95 % interval of a mean (z standard errors either side)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    half = z * float(values.std(ddof=1)) / math.sqrt(len(values))
    return (float(values.mean()) - half, float(values.mean()) + half)
