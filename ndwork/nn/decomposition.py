"""Series decompositions: the edge-padded moving-average trend (DLinear, TimeMixer),
and TimeMixer's top-k Fourier split."""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor


def check_window(window: int, name: str = "moving_avg") -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"{name}={window!r} must be an odd positive integer (a centered moving "
                         f"average keeps the series' length only for odd windows).")
    return window


def moving_average_split(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """x (B, T, ...) -> (remainder, trend): NeuralForecast's SeriesDecomp over time
    (axis 1), the ends repeated (window - 1) / 2 times."""
    trend = ops.moving_average(x, window)
    return ops.sub(x, trend), trend


def fourier_split(x: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """TimeMixer's DFT_series_decomp, as NeuralForecast computes it: the spectrum over
    x's last axis, its first row zeroed in the magnitudes (torch's freq[0] = 0), every
    frequency at or below the smallest of the top_k largest magnitudes dropped; the
    kept part is the season, x minus it the trend."""
    spectrum = ops.rfft(x, axis=-1)
    values = spectrum.data
    magnitude = np.hypot(values[..., 0], values[..., 1])
    magnitude[0] = 0
    k = min(top_k, magnitude.shape[-1])
    threshold = np.sort(magnitude, axis=-1)[..., -k].min()
    keep = (magnitude > threshold).astype(x.data.dtype)[..., None]
    season = ops.irfft(ops.mul(spectrum, ops.constant(keep)), 2 * (values.shape[-2] - 1), -1)
    return season, ops.sub(x, season)
