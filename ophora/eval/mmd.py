"""JEDi's distance: 100 x the squared MMD with the polynomial kernel k(x, y) = (<x, y> / d)^2.

As the reference (``videojedi.JEDiMetric.compute_metric`` -> ``mmd_poly(degree=2, gamma=None, coef0=0)`` with
scikit-learn's default gamma = 1 / d): mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y), diagonals included (the
biased V-statistic), in float64. ``KernelMMD`` keeps the three kernel matrices so a bootstrap resample costs an
index, not a recomputation.
"""

from __future__ import annotations

import numpy as np

JEDI_SCALE = 100.0


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 2, coef0: float = 0.0) -> np.ndarray:
    return (x @ y.T / x.shape[1] + coef0) ** degree


class KernelMMD:
    """The kernel matrices of two feature sets; ``value(i, j)`` is JEDi on the rows ``i`` and ``j``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, degree: int = 2, coef0: float = 0.0,
                 scale: float = JEDI_SCALE) -> None:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.xx = polynomial_kernel(x, x, degree, coef0)
        self.yy = polynomial_kernel(y, y, degree, coef0)
        self.xy = polynomial_kernel(x, y, degree, coef0)
        self.scale = scale

    def value(self, i: np.ndarray, j: np.ndarray) -> float:
        if len(i) < 1 or len(j) < 1:
            return float("nan")
        return float(self.scale * (self.xx[np.ix_(i, i)].mean() + self.yy[np.ix_(j, j)].mean()
                                   - 2 * self.xy[np.ix_(i, j)].mean()))


def jedi_distance(x: np.ndarray, y: np.ndarray) -> float:
    """JEDi between two feature sets (samples x dims)."""
    return KernelMMD(x, y).value(np.arange(len(x)), np.arange(len(y)))
