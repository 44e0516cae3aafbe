"""The Frechet distance between two Gaussians fitted to features, computed the way FID/FVD references do.

FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2).

Why not ``scipy.linalg.sqrtm``: it is slow for 2048x2048, had a regression in SciPy 1.11.2-1.12 and lost its
``disp`` argument in 1.18. The trace of sqrt(S1 S2) only needs the eigenvalues of S1 S2 (real and >= 0 in exact
arithmetic, since S1 S2 is similar to the PSD matrix S1^1/2 S2 S1^1/2). In float64 they come back with tiny
negative or imaginary parts when the covariances are near-singular (fewer samples than feature dimensions);
summing the real parts of their complex square roots drops those parts, exactly as pytorch-fid drops the
imaginary part of ``sqrtm``'s result, and refuses when the imaginary part is too large to be rounding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


class FrechetInputError(ValueError):
    """Features or statistics that cannot give a Frechet distance; the message says why."""


class SingularCovarianceWarning(UserWarning):
    """Fewer samples than feature dimensions: the covariance is singular and the distance is biased upwards."""


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance (float64) of a feature set, with the sample count they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray, name: str = "features", warn_singular: bool = True) -> "GaussianStats":
        """Fit mean and unbiased covariance (``np.cov``, ddof=1, as pytorch-fid and StyleGAN-V do)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise FrechetInputError(f"{name} must be a 2-D array (samples, dims); got shape {features.shape}")
        count, dims = features.shape
        if count < 2:
            raise FrechetInputError(
                f"{name}: {count} sample(s) cannot give a covariance estimate; at least 2 are needed (and more "
                f"than the {dims} feature dimensions for a non-singular one). Add clips.")
        if not np.all(np.isfinite(features)):
            raise FrechetInputError(f"{name} contains NaN or infinite values; check the extractor's weights and input")
        if warn_singular and count <= dims:
            warnings.warn(f"{name}: {count} samples for {dims} feature dimensions, so the covariance is singular; "
                          f"the distance is biased upwards and only comparable with runs of the same sample count "
                          f"(published FID/FVD use thousands of samples).", SingularCovarianceWarning, stacklevel=2)
        return cls(mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False, ddof=1), count=count)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     imaginary_tolerance: float = 1e-3) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``imaginary_tolerance`` bounds the imaginary part of the square-rooted eigenvalues (relative to the largest
    one) that is accepted as rounding noise, like pytorch-fid's ``1e-3`` check on ``sqrtm``'s diagonal.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise FrechetInputError(f"means must be 1-D and of equal length; got {mu1.shape} and {mu2.shape}")
    dims = mu1.shape[0]
    for label, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dims, dims):
            raise FrechetInputError(f"{label} must be {dims}x{dims} to match the means; got {sigma.shape}")
        if not np.all(np.isfinite(sigma)):
            raise FrechetInputError(f"{label} contains NaN or infinite values")
    # Covariances from np.cov are symmetric up to rounding; make it exact so S1 S2 has the spectrum it should.
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2

    diff = mu1 - mu2
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
    roots = np.sqrt(eigenvalues)
    scale = max(1.0, float(np.max(np.abs(roots)))) if roots.size else 1.0
    largest_imaginary = float(np.max(np.abs(roots.imag))) if roots.size else 0.0
    if largest_imaginary > imaginary_tolerance * scale:
        raise FrechetInputError(
            f"sqrt(S1 S2) has an imaginary component of {largest_imaginary:.3g} (largest root {scale:.3g}): the "
            f"covariances are not positive semi-definite. Recompute them from features with np.cov.")
    trace_sqrt = float(np.sum(roots.real))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet_distance_between(stats1: GaussianStats, stats2: GaussianStats) -> float:
    if stats1.mu.shape != stats2.mu.shape:
        raise FrechetInputError(f"feature dimensions differ: {stats1.mu.shape[0]} vs {stats2.mu.shape[0]}; were "
                                f"both sets extracted with the same model?")
    return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma)


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray, warn_singular: bool = True) -> float:
    """Fit Gaussians to two feature sets (samples x dims) and return their Frechet distance."""
    return frechet_distance_between(GaussianStats.from_features(features1, "first set", warn_singular),
                                    GaussianStats.from_features(features2, "second set", warn_singular))


def frechet_distance_of_samples(features1: np.ndarray, features2: np.ndarray) -> float:
    """The same distance as ``frechet_distance_of_features`` (no warnings, no checks), fast when a set has fewer
    samples than dimensions, as in every bootstrap resample of a small evaluation.

    With centred samples X1 (n1 x d) and X2, S1 S2 = X1^T X1 X2^T X2 / ((n1-1)(n2-1)) has the same non-zero
    eigenvalues as (X1 X2^T)^T (X1 X2^T) / ((n1-1)(n2-1)), so tr sqrt(S1 S2) is the sum of singular values of
    the n1 x n2 matrix X1 X2^T: an SVD of the small side instead of an eigen-decomposition of d x d.
    """
    x1 = np.asarray(features1, dtype=np.float64)
    x2 = np.asarray(features2, dtype=np.float64)
    n1, n2, dims = len(x1), len(x2), x1.shape[1]
    if n1 < 2 or n2 < 2:
        return float("nan")
    if min(n1, n2) >= dims:
        return frechet_distance(x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False))
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2
    trace_sqrt = float(np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()) / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(c1 * c1) / (n1 - 1) + np.sum(c2 * c2) / (n2 - 1) - 2.0 * trace_sqrt)
