"""NeuralForecast's temporal scalers: per-window statistics over the observed inputs.

x, mask: (W, L). Each returns (shift, scale), both (W,), so that z = (x - shift) / scale.
A constant window gets scale 1 (+eps) instead of a division by zero.
"""

import numpy as np

from ndwork.kernels._jit import jit_exact

SCALERS = ("identity", "standard", "robust", "minmax")
EPS = 1e-6
_MAD_FROM_STD = 0.6744897501960817


# --- numpy reference -----------------------------------------------------------

def _masked_mean(x, observed):
    count = observed.sum(axis=1)
    total = np.where(observed, x, 0).sum(axis=1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _masked_median(x, observed):
    """torch.nanmedian's median: the lower of the two middle values; 0 if none observed."""
    count = observed.sum(axis=1)
    ordered = np.sort(np.where(observed, x, np.inf), axis=1)
    middle = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    return np.where(count > 0, middle, 0).astype(x.dtype)


def scaler_statistics_reference(kind, x, mask):
    observed = mask > 0
    rows = x.shape[0]
    if kind == "identity":
        return np.zeros(rows, x.dtype), np.ones(rows, x.dtype)
    if kind == "minmax":
        high = np.where(observed, x, -np.inf).max(axis=1)
        low = np.where(observed, x, np.inf).min(axis=1)
        spread = high - low
        spread = np.where(spread == 0, 1.0, spread)
        count = observed.sum(axis=1)  # a window with nothing observed: shift 0, scale 1
        low, spread = np.where(count > 0, low, 0), np.where(count > 0, spread, 1.0)
        return low.astype(x.dtype), (spread + EPS).astype(x.dtype)
    mean = _masked_mean(x, observed)
    std = np.sqrt(_masked_mean((x - mean[:, None]) ** 2, observed))
    if kind == "standard":
        return mean.astype(x.dtype), (np.where(std == 0, 1.0, std) + EPS).astype(x.dtype)
    if kind == "robust":
        median = _masked_median(x, observed)
        mad = _masked_median(np.abs(x - median[:, None]), observed)
        mad = np.where(mad > 0, mad, std * _MAD_FROM_STD)
        return median, (np.where(mad == 0, 1.0, mad) + EPS).astype(x.dtype)
    raise ValueError(f"unknown scaler_type {kind!r}; use one of {SCALERS}")


# --- numba kernels ---------------------------------------------------------------

@jit_exact
def _median(values):
    n = values.size
    if n == 0:
        return 0.0
    s = np.sort(values)
    # torch.nanmedian returns the lower of the two middle values
    return s[(n - 1) // 2]


@jit_exact
def _statistics(code, x, mask, shift, scale):
    rows, length = x.shape
    for r in range(rows):
        count = 0
        total = 0.0
        high = -np.inf
        low = np.inf
        for j in range(length):
            if mask[r, j] > 0:
                count += 1
                total += x[r, j]
                if code == 3:
                    high = max(high, x[r, j])
                    low = min(low, x[r, j])
        if code == 3:
            if total != total:  # a NaN, which np.max and np.min propagate and max() skips
                high = low = np.nan
            spread = high - low
            if count == 0 or spread == 0:
                spread = 1.0
            shift[r] = low if count > 0 else 0.0
            scale[r] = spread + 1e-6
            continue
        mean = total / count if count > 0 else 0.0
        sq = 0.0
        for j in range(length):
            if mask[r, j] > 0:
                sq += (x[r, j] - mean) ** 2
        std = np.sqrt(sq / count) if count > 0 else 0.0
        if code == 1:
            shift[r] = mean
            scale[r] = (std if std != 0 else 1.0) + 1e-6
            continue
        observed = np.empty(count, dtype=x.dtype)
        k = 0
        for j in range(length):
            if mask[r, j] > 0:
                observed[k] = x[r, j]
                k += 1
        median = _median(observed)
        for j in range(count):
            observed[j] = abs(observed[j] - median)
        mad = _median(observed)
        if mad <= 0:
            mad = std * 0.6744897501960817
        shift[r] = median
        scale[r] = (mad if mad != 0 else 1.0) + 1e-6


def scaler_statistics(kind, x, mask):
    if kind not in SCALERS:
        raise ValueError(f"unknown scaler_type {kind!r}; use one of {SCALERS}")
    rows = x.shape[0]
    if kind == "identity":
        return np.zeros(rows, x.dtype), np.ones(rows, x.dtype)
    shift = np.empty(rows, x.dtype)
    scale = np.empty(rows, x.dtype)
    _statistics(SCALERS.index(kind), np.ascontiguousarray(x),
                np.ascontiguousarray(mask, x.dtype), shift, scale)
    return shift, scale


KERNELS = {"scaler_statistics": (scaler_statistics, scaler_statistics_reference)}
