"""LayerNorm over the last axis: x (R, C), gamma and beta (C,), eps added to the
variance (torch's 1e-5 by default; TSMixer's BatchNorm uses 1e-3).

The forward caches mean and rstd (R,) for the backward, as llm.c does.
"""

import math

import numpy as np

from ndwork.kernels._jit import jit

EPS = 1e-5


def layernorm_forward_reference(x, gamma, beta, eps=EPS):
    mean = x.mean(axis=1)
    centered = x - mean[:, None]
    rstd = 1 / np.sqrt((centered * centered).mean(axis=1) + eps)
    return centered * rstd[:, None] * gamma + beta, mean, rstd


def layernorm_backward_reference(x, gamma, mean, rstd, dy):
    xhat = (x - mean[:, None]) * rstd[:, None]
    dgamma = (dy * xhat).sum(axis=0)
    dbeta = dy.sum(axis=0)
    dxhat = dy * gamma
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    return dx, dgamma, dbeta


@jit
def _ln_fwd(x, gamma, beta, eps, out, mean, rstd):
    rows, cols = x.shape
    for r in range(rows):
        s = 0.0
        for c in range(cols):
            s += x[r, c]
        m = s / cols
        v = 0.0
        for c in range(cols):
            v += (x[r, c] - m) ** 2
        rs = 1.0 / math.sqrt(v / cols + eps)
        mean[r] = m
        rstd[r] = rs
        for c in range(cols):
            out[r, c] = (x[r, c] - m) * rs * gamma[c] + beta[c]


@jit
def _ln_bwd(x, gamma, mean, rstd, dy, dx):
    rows, cols = x.shape
    sums = np.zeros((2, cols))
    for r in range(rows):
        a = 0.0
        b = 0.0
        for c in range(cols):
            xhat = (x[r, c] - mean[r]) * rstd[r]
            g = dy[r, c] * gamma[c]
            a += g
            b += g * xhat
            sums[0, c] += dy[r, c] * xhat
            sums[1, c] += dy[r, c]
        a /= cols
        b /= cols
        for c in range(cols):
            xhat = (x[r, c] - mean[r]) * rstd[r]
            dx[r, c] = rstd[r] * (dy[r, c] * gamma[c] - a - xhat * b)
    return sums


def layernorm_forward(x, gamma, beta, eps=EPS):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    mean = np.empty(x.shape[0], x.dtype)
    rstd = np.empty(x.shape[0], x.dtype)
    _ln_fwd(x, gamma, beta, float(eps), out, mean, rstd)
    return out, mean, rstd


def layernorm_backward(x, gamma, mean, rstd, dy):
    dx = np.empty_like(x)
    sums = _ln_bwd(np.ascontiguousarray(x), gamma, mean, rstd, np.ascontiguousarray(dy), dx)
    return dx, sums[0].astype(x.dtype), sums[1].astype(x.dtype)


KERNELS = {
    "layernorm_forward": (layernorm_forward, layernorm_forward_reference),
    "layernorm_backward": (layernorm_backward, layernorm_backward_reference),
}
