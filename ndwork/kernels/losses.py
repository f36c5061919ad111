"""Masked forecast losses: each kernel returns (value, d value / d y_hat) in one call.

y_hat, y, mask: (B, h) float arrays for point losses; MQLoss takes y_hat (B, h, Q).
The value is NeuralForecast's weighted mean sum(mask * l) / sum(mask) (0 when the
mask is empty). Ties of a kink (|e| = 0) get a zero subgradient in both paths.
"""

import numpy as np

from ndwork.kernels._jit import jit

POINT_LOSSES = {"mae": 0, "mse": 1, "huber": 2, "quantile": 3, "mape": 4, "smape": 5}


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


# --- numpy reference -----------------------------------------------------------

def point_loss_reference(kind, y_hat, y, mask, param=0.0):
    """kind in POINT_LOSSES; param is Huber's delta or the quantile q."""
    e = y_hat - y
    sign = np.sign(e)
    if kind == "mae":
        losses, grads = np.abs(e), sign
    elif kind == "mse":
        losses, grads = e * e, 2 * e
    elif kind == "huber":
        small = np.abs(e) <= param
        losses = np.where(small, 0.5 * e * e, param * (np.abs(e) - 0.5 * param))
        grads = np.where(small, e, param * sign)
    elif kind == "quantile":
        losses = np.maximum(-param * e, (1 - param) * e)
        grads = np.where(e > 0, 1 - param, np.where(e < 0, -param, e * 0))  # NaN stays
    elif kind == "mape":
        scale = _safe_div(np.ones_like(y), np.abs(y))
        losses, grads = np.abs(e) * scale, sign * scale
    elif kind == "smape":
        denominator = np.abs(y) + np.abs(y_hat)
        losses = 2 * _safe_div(np.abs(e), denominator)
        grads = 2 * _safe_div(sign * denominator - np.abs(e) * np.sign(y_hat),
                              denominator * denominator)
    else:
        raise ValueError(f"unknown loss {kind!r}; use one of {list(POINT_LOSSES)}")
    total = mask.sum()
    if total == 0:
        return 0.0, np.zeros_like(y_hat)
    value = float((losses * mask).sum() / total)
    return value, (grads * (mask / total)).astype(y_hat.dtype)


def mqloss_reference(y_hat, y, mask, quantiles):
    """Multi-quantile loss: y_hat (B, h, Q), quantiles (Q,); the pinball losses summed
    over the quantiles, as NeuralForecast 3.3 computes it (its 1 / len(quantiles) takes
    the length of a (1, 1, 1, Q) tensor, which is 1)."""
    e = y_hat - y[..., None]
    q = quantiles.astype(y_hat.dtype)
    losses = q * np.maximum(-e, 0) + (1 - q) * np.maximum(e, 0)
    grads = np.where(e > 0, 1 - q, np.where(e < 0, -q, e * 0))  # NaN stays NaN
    total = mask.sum()
    if total == 0:
        return 0.0, np.zeros_like(y_hat)
    w = (mask / total)[..., None]
    return float((losses * w).sum()), (grads * w).astype(y_hat.dtype)


# --- numba kernels ---------------------------------------------------------------

@jit(inline="always")
def _point(code, yh, yv, param):
    e = yh - yv
    zero = e * 0.0  # 0, or NaN when e is NaN or inf: kinks propagate NaN as np.sign does
    s = 1.0 if e > 0 else (-1.0 if e < 0 else zero)
    a = abs(e)
    if code == 0:
        return a, s
    if code == 1:
        return e * e, 2 * e
    if code == 2:
        if a <= param:
            return 0.5 * e * e, e
        return param * (a - 0.5 * param), param * s
    if code == 3:
        if e > 0:
            return (1 - param) * e, 1 - param
        if e < 0:
            return -param * e, -param
        return zero, zero
    if code == 4:
        if yv == 0:
            return 0.0, 0.0
        return a / abs(yv), s / abs(yv)
    d = abs(yv) + abs(yh)
    if d == 0:
        return 0.0, 0.0
    sh = 1.0 if yh > 0 else (-1.0 if yh < 0 else yh * 0.0)
    return 2 * a / d, 2 * (s * d - a * sh) / (d * d)


@jit
def _point_loss(code, y_hat, y, mask, param):
    grad = np.empty_like(y_hat)
    lsum = 0.0
    wsum = 0.0
    for i in range(y_hat.size):
        loss, g = _point(code, y_hat[i], y[i], param)
        lsum += loss * mask[i]
        wsum += mask[i]
        grad[i] = g * mask[i]
    if wsum == 0:
        grad[:] = 0
        return 0.0, grad
    grad *= 1.0 / wsum
    return lsum / wsum, grad


@jit
def _mqloss(y_hat, y, mask, quantiles):
    n, n_q = y_hat.shape
    grad = np.empty_like(y_hat)
    lsum = 0.0
    wsum = 0.0
    for i in range(n):
        w = mask[i]
        wsum += w
        for k in range(n_q):
            e = y_hat[i, k] - y[i]
            q = quantiles[k]
            if e > 0:
                lsum += w * (1 - q) * e
                grad[i, k] = w * (1 - q)
            elif e < 0:
                lsum -= w * q * e
                grad[i, k] = -w * q
            else:  # 0, or NaN when e is NaN
                lsum += w * e * 0.0
                grad[i, k] = w * e * 0.0
    if wsum == 0:
        grad[:] = 0
        return 0.0, grad
    grad *= 1.0 / wsum
    return lsum / wsum, grad


def point_loss(kind, y_hat, y, mask, param=0.0):
    if kind not in POINT_LOSSES:
        raise ValueError(f"unknown loss {kind!r}; use one of {list(POINT_LOSSES)}")
    y_hat = np.ascontiguousarray(y_hat)
    value, grad = _point_loss(
        POINT_LOSSES[kind], y_hat.reshape(-1), np.ascontiguousarray(y, y_hat.dtype).reshape(-1),
        np.ascontiguousarray(mask, y_hat.dtype).reshape(-1), float(param),
    )
    return float(value), grad.reshape(y_hat.shape)


def mqloss(y_hat, y, mask, quantiles):
    y_hat = np.ascontiguousarray(y_hat)
    n_q = y_hat.shape[-1]
    value, grad = _mqloss(
        y_hat.reshape(-1, n_q), np.ascontiguousarray(y, y_hat.dtype).reshape(-1),
        np.ascontiguousarray(mask, y_hat.dtype).reshape(-1),
        np.asarray(quantiles, dtype=y_hat.dtype),
    )
    return float(value), grad.reshape(y_hat.shape)


KERNELS = {
    "point_loss": (point_loss, point_loss_reference),
    "mqloss": (mqloss, mqloss_reference),
}
