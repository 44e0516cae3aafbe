"""Uncertainty and sample-size honesty for set-level metrics: bootstrap intervals over clips, and the Frechet
distance extrapolated to infinitely many samples.

Why: one FID/FVD number per model cannot say whether two models differ, and Frechet distances are biased
upwards by roughly c / N, so values at different clip counts do not compare.

- ``bootstrap``: resample the clips of every set independently with replacement (a clip keeps all its frames),
  recompute the metric, and report the basic ("reverse percentile") interval 2 x estimate - quantiles. The
  plain percentile interval inherits the resampling's own upward bias of the Frechet distance (a resample with
  duplicates looks even more like a small set), so it misses the true value far more often than 5% at small
  counts; the basic interval reflects that bias back. ``tests/eval/test_intervals.py`` measures both on Gaussian
  features with a known distance.
- ``paired``: the same resampled indices for two sets that are paired clip by clip (the same prompts and seeds),
  and the same real clips for both, so the interval is for the difference A - B.
- ``extrapolated_frechet``: the distance at several subset sizes (each set subsampled without replacement to the
  same fraction), a least-squares line against 1/N, and its intercept at 1/N = 0, as "Effectively Unbiased FID
  and Inception Score and where to find them" (Chong & Forsyth, CVPR 2020) does for FID.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

DEFAULT_RESAMPLES = 200
DEFAULT_LEVEL = 0.95
# Fractions of each set used for the 1/N fit; the full set is the last point.
EXTRAPOLATION_FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval; ``method`` and ``resamples`` go into every report."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    method: str = "basic bootstrap over clips"

    def to_dict(self) -> dict:
        return asdict(self)


def basic_interval(estimate: float, replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Reverse-percentile interval: (2 x estimate - q_high, 2 x estimate - q_low) of the replicates."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    q_low, q_high = np.quantile(finite, [alpha, 1 - alpha])
    return float(2 * estimate - q_high), float(2 * estimate - q_low)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def resample_indices(sizes: Sequence[int], rng: np.random.Generator,
                     pairs: Sequence[tuple[int, int]] = ()) -> list[np.ndarray]:
    """One bootstrap draw of indices for each set; sets named in ``pairs`` (equal sizes) share their draw."""
    draws = [rng.integers(0, size, size) for size in sizes]
    for first, second in pairs:
        draws[second] = draws[first]
    return draws


def bootstrap(statistic: Callable[..., float], sizes: Sequence[int], resamples: int = DEFAULT_RESAMPLES,
              level: float = DEFAULT_LEVEL, seed: int = 0, pairs: Sequence[tuple[int, int]] = ()) -> Interval:
    """Interval of ``statistic(*index_arrays)``, whose arguments index each set's clips.

    ``statistic`` is called once with ``np.arange(size)`` per set for the estimate, then ``resamples`` times
    with resampled indices; a draw that cannot be evaluated (NaN) is left out.
    """
    if resamples < 2:
        raise ValueError("resamples must be at least 2")
    estimate = float(statistic(*[np.arange(size) for size in sizes]))
    rng = np.random.default_rng(seed)
    replicates = np.array([statistic(*resample_indices(sizes, rng, pairs)) for _ in range(resamples)], dtype=float)
    low, high = basic_interval(estimate, replicates, level)
    return Interval(estimate, low, high, level, resamples)


@dataclass(frozen=True)
class Extrapolation:
    """The Frechet distance fitted as ``value_at_infinity + slope / N`` over subsets of ``sizes`` samples."""

    value_at_infinity: float
    slope: float
    sizes: tuple[int, ...]
    values: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def extrapolate_to_infinity(statistic: Callable[..., float], sizes: Sequence[int],
                            fractions: Sequence[float] = EXTRAPOLATION_FRACTIONS, draws: int = 3,
                            seed: int = 0) -> Extrapolation:
    """Fit ``statistic`` (called with index arrays, as in ``bootstrap``) against 1 / (subset size of the first
    set) over subsets drawn without replacement at each fraction, and return the intercept.

    Every set is subsampled to the same fraction, so both sets' 1/N terms shrink together and the fit is a line.
    """
    rng = np.random.default_rng(seed)
    counts, values = [], []
    for fraction in fractions:
        subset_sizes = [max(2, int(round(fraction * size))) for size in sizes]
        repeats = 1 if fraction >= 1.0 else draws
        for _ in range(repeats):
            indices = [np.sort(rng.choice(size, sub, replace=False)) for size, sub in zip(sizes, subset_sizes)]
            value = float(statistic(*indices))
            if np.isfinite(value):
                counts.append(subset_sizes[0])
                values.append(value)
    if len(set(counts)) < 2:
        return Extrapolation(float("nan"), float("nan"), tuple(counts), tuple(values))
    slope, intercept = np.polyfit(1.0 / np.asarray(counts, dtype=float), np.asarray(values), 1)
    return Extrapolation(float(intercept), float(slope), tuple(counts), tuple(values))
