"""Linear layer y = act(x @ W + b) with the bias and activation fused into one pass.

x: (B, in), W: (in, out), b: (out,), y: (B, out). The GEMMs go through BLAS in both
paths; the numba path fuses bias + activation after the forward GEMM and
activation-derivative + bias-gradient before the backward GEMMs, saving passes over
(B, out). Activations here are the ones whose derivative follows from the output y
("identity", "relu", "tanh", "sigmoid"), so the forward caches only y.
"""

import math

import numpy as np

from ndwork.kernels._jit import jit

ACTIVATIONS = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def _activation_code(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not fusable; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


# --- numpy reference ---------------------------------------------------------

def linear_forward_reference(x, W, b, activation="identity"):
    z = x @ W
    if b is not None:
        z += b
    code = _activation_code(activation)
    if code == 1:
        np.maximum(z, 0, out=z)
    elif code == 2:
        np.tanh(z, out=z)
    elif code == 3:
        z = (1 / (1 + np.exp(-z))).astype(x.dtype, copy=False)
    return z


def _activation_grad_reference(y, dy, code):
    if code == 1:
        return dy * (y > 0)
    if code == 2:
        return dy * (1 - y * y)
    if code == 3:
        return dy * y * (1 - y)
    return dy


def linear_backward_reference(x, W, y, dy, activation="identity", need_dx=True):
    """Returns (dx, dW, db); dx is None when need_dx is False (first layer)."""
    dz = _activation_grad_reference(y, dy, _activation_code(activation))
    dW = x.T @ dz
    db = dz.sum(axis=0)
    dx = dz @ W.T if need_dx else None
    return dx, dW, db


# --- numba path ----------------------------------------------------------------

@jit
def _bias_activation(z, b, code):
    n, m = z.shape
    zero, one = z.dtype.type(0), z.dtype.type(1)
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            if code == 1:
                v = max(v, zero)
            elif code == 2:
                v = math.tanh(v)
            elif code == 3:
                v = one / (one + math.exp(-v))
            z[i, j] = v


@jit
def _activation_grad_and_bias(y, dy, code):
    """dz = dy * act'(y) and db = sum_rows(dz) in one pass."""
    n, m = y.shape
    dz = np.empty_like(dy)
    db = np.zeros(m, dtype=np.float64)
    for i in range(n):
        for j in range(m):
            g = dy[i, j]
            if code == 1:
                g = g if y[i, j] > 0 else 0
            elif code == 2:
                g = g * (1 - y[i, j] * y[i, j])
            elif code == 3:
                g = g * y[i, j] * (1 - y[i, j])
            dz[i, j] = g
            db[j] += g
    return dz, db.astype(dy.dtype)


def linear_forward(x, W, b, activation="identity"):
    code = _activation_code(activation)
    z = x @ W
    if b is None:
        b = np.zeros(W.shape[1], dtype=z.dtype)
    _bias_activation(z, b, code)
    return z


def linear_backward(x, W, y, dy, activation="identity", need_dx=True):
    dz, db = _activation_grad_and_bias(
        y, np.ascontiguousarray(dy), _activation_code(activation))
    dW = x.T @ dz
    dx = dz @ W.T if need_dx else None
    return dx, dW, db


KERNELS = {
    "linear_forward": (linear_forward, linear_forward_reference),
    "linear_backward": (linear_backward, linear_backward_reference),
}
