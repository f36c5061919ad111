"""Sample paths (NeuralForecast 3.3's `simulate`): joint draws of a whole horizon.

A model's forecast gives each horizon step's marginal distribution as quantiles on a
grid (a distribution's sampled quantiles, MQLoss's or IQLoss's quantiles, or conformal
quantiles around a point forecast); the paths tie the steps together with a Gaussian
copula whose correlation decays as rho^|i - j| (rho: the lag-1 autocorrelation of the
series' first differences), or reorder independent draws by the ranks of stretches of
the series' own history (Schaake shuffle). DeepAR needs neither: its sample paths are
its forecast.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

DEFAULT_QUANTILE_GRID = [round(q / 100, 2) for q in range(1, 100)]
METHODS = ("gaussian_copula", "schaake_shuffle")


def lag_one_rho(y: np.ndarray) -> float:
    """Lag-1 autocorrelation of the first differences of y (NaN dropped), in
    [-0.99, 0.99]; 0 for fewer than 3 values or a constant difference."""
    y = y[np.isfinite(y)].astype(np.float64)
    if len(y) < 3:
        return 0.0
    d = np.diff(y)
    x, z = d[:-1] - d[:-1].mean(), d[1:] - d[1:].mean()
    denominator = np.sqrt((x * x).sum() * (z * z).sum())
    if denominator < 1e-15:
        return 0.0
    return float(np.clip((x * z).sum() / denominator, -0.99, 0.99))


def _interpolate(u: np.ndarray, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's inverse CDF at u (rows, n): linear between the quantile grid's points
    `positions` (Q,) with values (rows, Q)."""
    q = len(positions)
    idx = np.clip(np.searchsorted(positions, u), 1, q - 1)
    x0, x1 = positions[idx - 1], positions[idx]
    f0 = np.take_along_axis(values, idx - 1, axis=1)
    f1 = np.take_along_axis(values, idx, axis=1)
    width = np.where(np.abs(x1 - x0) < 1e-15, 1.0, x1 - x0)
    return f0 + (u - x0) / width * (f1 - f0)


def gaussian_copula(positions: np.ndarray, values: np.ndarray, histories: list[np.ndarray],
                    n_paths: int, rng: np.random.Generator) -> np.ndarray:
    """values (S, h, Q) at quantile positions (Q,) -> paths (S, n_paths, h)."""
    n_series, h, _ = values.shape
    lags = np.abs(np.subtract.outer(np.arange(h), np.arange(h)))
    paths = np.empty((n_series, n_paths, h))
    z = rng.standard_normal((n_series, h, n_paths))
    for i, history in enumerate(histories):
        correlation = abs(lag_one_rho(history)) ** lags
        factor = np.eye(h)  # independent steps if no jitter makes it positive definite
        for jitter in (1e-8, 1e-6, 1e-4, 1e-2):
            try:
                factor = np.linalg.cholesky(correlation + jitter * np.eye(h))
                break
            except np.linalg.LinAlgError:
                continue
        u = np.clip(ndtr(factor @ z[i]), positions[0], positions[-1])  # (h, n_paths)
        paths[i] = _interpolate(u, positions, values[i]).T
    return paths


def schaake_shuffle(positions: np.ndarray, values: np.ndarray, histories: list[np.ndarray],
                    n_paths: int, rng: np.random.Generator) -> np.ndarray:
    """values (S, h, Q) -> paths (S, n_paths, h): independent draws per step, reordered
    across paths by the ranks of n_paths stretches of h consecutive historical values."""
    n_series, h, _ = values.shape
    paths = np.empty((n_series, n_paths, h))
    for i, history in enumerate(histories):
        history = history[np.isfinite(history)]
        if len(history) < h:
            raise ValueError(f"the Schaake shuffle takes templates of h={h} past values, and "
                             f"series {i} has {len(history)}; use method='gaussian_copula'.")
        u = rng.uniform(positions[0], positions[-1], (h, n_paths))
        draws = np.sort(_interpolate(u, positions, values[i]), axis=1)
        count = len(history) - h + 1
        starts = (rng.permutation(count)[:n_paths] if count >= n_paths
                  else rng.integers(0, count, n_paths))
        templates = np.lib.stride_tricks.sliding_window_view(history, h)[starts].T  # (h, n)
        ranks = np.argsort(np.argsort(templates, axis=1, kind="stable"), axis=1, kind="stable")
        paths[i] = np.take_along_axis(draws, ranks, axis=1).T
    return paths


SAMPLERS = {"gaussian_copula": gaussian_copula, "schaake_shuffle": schaake_shuffle}
