"""What the multivariate models share: NeuralForecast's layouts of a step's series and
its reversible instance normalization.

ndwork hands a multivariate model its batch window-major: the n_series rows of one
window together, insample_y (W * N, L), exogenous streams (W * N, T, F), static
(W * N, S). NeuralForecast's models read (W, L, N), (W, F, T, N) and (N, S), and
return (W, h, N * n_outputs), which its losses read as (W, h, N, n_outputs).
"""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.nn import ParameterSpec

NORM_EPS = 1e-5


def series_last(rows: Tensor | np.ndarray, n_series: int) -> Tensor:
    """Window-major rows (W * N, L) -> NeuralForecast's (W, L, N)."""
    rows = ops.as_tensor(rows)
    w = rows.shape[0] // n_series
    return ops.transpose(ops.reshape(rows, (w, n_series, rows.shape[1])), (0, 2, 1))


def exog_series_last(exog: Tensor | np.ndarray, n_series: int) -> Tensor:
    """An exogenous stream (W * N, T, F) -> NeuralForecast's (W, F, T, N)."""
    exog = ops.as_tensor(exog)
    w = exog.shape[0] // n_series
    return ops.transpose(ops.reshape(exog, (w, n_series, *exog.shape[1:])), (0, 3, 2, 1))


def per_window(rows: Tensor | np.ndarray, n_series: int) -> Tensor:
    """Rows (W * N, ...) -> (W, N, ...): each window's series together."""
    rows = ops.as_tensor(rows)
    return ops.reshape(rows, (rows.shape[0] // n_series, n_series, *rows.shape[1:]))


def series_outputs(y: Tensor, n_series: int, n_outputs: int) -> Tensor:
    """NeuralForecast's multivariate forecast (W, h, N * n_outputs) -> ndwork's rows
    (W * N, h, n_outputs), as NeuralForecast's losses split it."""
    w, h = y.shape[:2]
    y = ops.transpose(ops.reshape(y, (w, h, n_series, n_outputs)), (0, 2, 1, 3))
    return ops.reshape(y, (w * n_series, h, n_outputs))


def instance_statistics(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Each series' mean and deviation over time (biased variance + 1e-5 under the root),
    constants as NeuralForecast detaches them."""
    mean = x.mean(axis=axis, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=axis, keepdims=True) + NORM_EPS)
    return mean, std.astype(x.dtype)


def instance_denorm(out: Tensor, stats: tuple[np.ndarray, np.ndarray], n_series: int) -> Tensor:
    """out (W, N, ...) back to each series' scale, stats the (W * N, 1) rows'
    instance_statistics."""
    shape = (out.shape[0], n_series) + (1,) * (len(out.shape) - 2)
    mean, std = (ops.constant(s.reshape(shape)) for s in stats)
    return ops.add(ops.mul(out, std), mean)


class RevIN:
    """Reversible instance normalization of (W, T, N) over time, per window and series:
    NeuralForecast's RevINMultivariate (TSMixer, TSMixerx, RMoK), or with
    `guarded=True` its RevIN (TimeMixer), whose denormalization divides by the affine
    weight plus eps². Statistics are constants; the affine weight and bias (N,) learn."""

    def __init__(self, spec: ParameterSpec, name: str, n_series: int, affine: bool = True,
                 guarded: bool = False):
        self.weight = spec.add(f"{name}.affine_weight", (n_series,), "constant", 1.0) \
            if affine else None
        self.bias = spec.add(f"{name}.affine_bias", (n_series,), "constant", 0.0) \
            if affine else None
        self.guard = NORM_EPS ** 2 if guarded else 0.0

    def norm(self, p, x: Tensor) -> tuple[Tensor, tuple[np.ndarray, np.ndarray]]:
        """x (W, T, N), the model's input (no gradient) -> normalized, and the statistics
        denorm takes."""
        stats = instance_statistics(x.data, axis=1)
        y = ops.constant((x.data - stats[0]) / stats[1])
        if self.weight is not None:
            y = ops.add(ops.mul(y, p[self.weight]), p[self.bias])
        return y, stats

    def denorm(self, p, y: Tensor, stats: tuple[np.ndarray, np.ndarray]) -> Tensor:
        if self.weight is not None:
            weight = p[self.weight]
            if self.guard:
                weight = ops.add(weight, ops.constant(np.asarray(self.guard, y.data.dtype)))
            y = ops.divide(ops.sub(y, p[self.bias]), weight)
        return ops.add(ops.mul(y, ops.constant(stats[1])), ops.constant(stats[0]))
