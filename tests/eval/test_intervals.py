"""Bootstrap intervals and the 1/N extrapolation, measured on Gaussian features whose Frechet distance is known
in closed form (diagonal covariances: ||dmu||^2 + sum (s_i - t_i)^2). The settings here (dims, counts, seeds)
are not the ones the method was chosen on (see the module docstring of ophora.eval.intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from ophora.eval.frechet import frechet_distance_of_features, frechet_distance_of_samples
from ophora.eval.intervals import (basic_interval, bootstrap, extrapolate_to_infinity, percentile_interval,
                                  resample_indices)


def _gaussian_world(seed: int, dims: int):
    rng = np.random.default_rng(seed)
    s, t = rng.uniform(0.5, 1.5, dims), rng.uniform(0.5, 1.5, dims)
    shift = np.zeros(dims)
    shift[: dims // 3] = 0.4
    return rng, s, t, shift, float(shift @ shift + np.sum((s - t) ** 2))


@pytest.mark.parametrize("n1,n2,dims", [(30, 50, 100), (80, 60, 20), (200, 150, 40)])
def test_sample_space_frechet_equals_the_covariance_formula(n1, n2, dims):
    rng = np.random.default_rng(dims)
    x, y = rng.normal(size=(n1, dims)), rng.normal(0.2, 1.3, size=(n2, dims))
    with pytest.warns(UserWarning) if min(n1, n2) <= dims else _no_warning():
        expected = frechet_distance_of_features(x, y)
    # Rank-deficient S1 S2 loses ~1e-8 in its eigenvalues; the SVD route is the more accurate of the two.
    assert frechet_distance_of_samples(x, y) == pytest.approx(expected, rel=1e-7)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_interval_covers_the_known_distance_near_the_nominal_rate_and_extrapolation_removes_the_bias():
    dims, n_gen, n_real, experiments = 12, 150, 110, 80
    rng, s, t, shift, true = _gaussian_world(7, dims)
    covered = covered_percentile = 0
    raw_bias, extrapolated_bias = [], []
    for experiment in range(experiments):
        x = rng.normal(size=(n_gen, dims)) * s
        y = shift + rng.normal(size=(n_real, dims)) * t

        def statistic(i, j):
            return frechet_distance_of_samples(x[i], y[j])

        estimate = statistic(np.arange(n_gen), np.arange(n_real))
        draws = np.random.default_rng(experiment)
        replicates = np.array([statistic(*resample_indices([n_gen, n_real], draws)) for _ in range(150)])
        low, high = basic_interval(estimate, replicates, 0.95)
        if experiment == 0:  # the same draws as bootstrap() makes, so one set of replicates serves both intervals
            reference = bootstrap(statistic, [n_gen, n_real], 150, seed=0)
            assert (low, high) == pytest.approx((reference.low, reference.high))
        covered += low <= true <= high
        low, high = percentile_interval(replicates, 0.95)
        covered_percentile += low <= true <= high
        raw_bias.append(estimate - true)
        extrapolated_bias.append(extrapolate_to_infinity(statistic, [n_gen, n_real], seed=experiment)
                                 .value_at_infinity - true)
    coverage = covered / experiments
    # Binomial(80, 0.95) falls below 0.875 with probability < 1%.
    assert 0.875 <= coverage <= 1.0, coverage
    # The plain percentile interval sits on the biased side: why the basic interval is the one reported.
    assert covered_percentile / experiments < coverage - 0.2
    assert np.mean(raw_bias) > 0.5  # the small-sample bias is real at these counts...
    assert abs(np.mean(extrapolated_bias)) < 0.25 * np.mean(raw_bias)  # ...and the 1/N fit removes most of it


def test_paired_resampling_shares_draws_and_narrows_the_difference():
    rng = np.random.default_rng(11)
    base = rng.normal(size=200)
    a, b = base + rng.normal(0, 0.1, 200), base + 0.05 + rng.normal(0, 0.1, 200)

    def difference(i, j):
        return float(a[i].mean() - b[j].mean())

    paired = bootstrap(difference, [200, 200], resamples=300, pairs=[(0, 1)])
    unpaired = bootstrap(difference, [200, 200], resamples=300)
    assert paired.high < 0  # the shift of 0.05 is resolved only when clips are paired
    assert paired.high - paired.low < 0.3 * (unpaired.high - unpaired.low)
    draws = resample_indices([5, 5, 7], np.random.default_rng(0), pairs=[(0, 1)])
    assert np.array_equal(draws[0], draws[1]) and len(draws[2]) == 7
