"""The Frechet distance against closed forms for known Gaussians and against a plain scipy.linalg.sqrtm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from ophora.eval.frechet import (FrechetInputError, GaussianStats, SingularCovarianceWarning, frechet_distance,
                                 frechet_distance_of_features)


def scipy_reference(mu1, s1, mu2, s2) -> float:
    """The textbook formula with scipy's sqrtm, as pytorch-fid wrote it before its eigenvalue shortcut."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_spd(rng, dims: int, samples: int | None = None) -> np.ndarray:
    x = rng.normal(size=(samples or 3 * dims, dims))
    return np.cov(x, rowvar=False)


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=64), random_spd(rng, 64)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_equal_covariances_give_squared_mean_distance_in_2048_dims():
    dims = 2048
    identity = np.eye(dims)
    assert frechet_distance(np.zeros(dims), identity, np.ones(dims), identity) == pytest.approx(2048.0, rel=1e-10)


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    s, t = rng.uniform(0.1, 3, size=20), rng.uniform(0.1, 3, size=20)  # standard deviations
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s - t) ** 2)
    assert frechet_distance(mu1, np.diag(s**2), mu2, np.diag(t**2)) == pytest.approx(expected, rel=1e-10)


def test_scaling_and_symmetry():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 16)), rng.normal(loc=0.3, scale=1.5, size=(300, 16))
    base = frechet_distance_of_features(x, y)
    assert frechet_distance_of_features(3 * x, 3 * y) == pytest.approx(9 * base, rel=1e-9)
    assert frechet_distance_of_features(y, x) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("dims,samples", [(8, 50), (64, 500), (128, 129)])
def test_matches_scipy_sqrtm_on_well_conditioned_covariances(dims, samples):
    rng = np.random.default_rng(dims)
    mu1, mu2 = rng.normal(size=dims), rng.normal(size=dims)
    s1, s2 = random_spd(rng, dims, samples), random_spd(rng, dims, samples)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_reference(mu1, s1, mu2, s2), rel=1e-7)


def test_near_singular_covariances_stay_real_and_match_scipy():
    # Fewer samples than dimensions: rank-deficient covariances, the usual case for small FID sets.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 100)), rng.normal(loc=0.1, size=(40, 100))
    with pytest.warns(SingularCovarianceWarning):
        stats_x = GaussianStats.from_features(x)
    stats_y = GaussianStats.from_features(y, warn_singular=False)
    ours = frechet_distance(stats_x.mu, stats_x.sigma, stats_y.mu, stats_y.sigma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = scipy_reference(stats_x.mu, stats_x.sigma, stats_y.mu, stats_y.sigma)
    assert np.isfinite(ours) and isinstance(ours, float)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 32)), rng.normal(loc=0.05, size=(400, 32))
    exact = frechet_distance_of_features(x, y)
    assert frechet_distance_of_features(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(exact, rel=1e-5)


def test_too_few_samples_and_bad_shapes_are_clear_errors():
    with pytest.raises(FrechetInputError, match="at least 2"):
        GaussianStats.from_features(np.ones((1, 8)))
    with pytest.raises(FrechetInputError, match="2-D"):
        GaussianStats.from_features(np.ones(8))
    with pytest.raises(FrechetInputError, match="NaN"):
        GaussianStats.from_features(np.full((4, 2), np.nan))
    with pytest.raises(FrechetInputError, match="equal length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(FrechetInputError, match="3x3"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_non_psd_covariance_is_refused():
    # A covariance with a large negative eigenvalue cannot come from data: the sqrt is far from real.
    bad = np.diag([1.0, -4.0])
    with pytest.raises(FrechetInputError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2))
