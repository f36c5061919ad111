"""Elementwise activations, forward and backward, numba beside the numpy reference.

Arrays are any shape, float32 or float64. Backward takes what forward cached:
ReLU, tanh and sigmoid need only their output y; GELU needs its input x.
"""

import math

import numba as nb
import numpy as np
from scipy.special import erf

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


# --- numpy references -------------------------------------------------------

def relu_forward_reference(x):
    return np.maximum(x, 0)


def relu_backward_reference(y, dy):
    return dy * (y > 0)


def tanh_forward_reference(x):
    return np.tanh(x)


def tanh_backward_reference(y, dy):
    return dy * (1 - y * y)


def sigmoid_forward_reference(x):
    return (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)


def sigmoid_backward_reference(y, dy):
    return dy * y * (1 - y)


def gelu_forward_reference(x):
    return (0.5 * x * (1 + erf(x * _SQRT_HALF))).astype(x.dtype, copy=False)


def gelu_backward_reference(x, dy):
    cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return (dy * (cdf + x * pdf)).astype(x.dtype, copy=False)


def softmax_forward_reference(x):
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_reference(y, dy):
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


# --- numba kernels: flat loops over the raveled arrays ----------------------

@nb.njit(cache=True, fastmath=True)
def _relu_fwd(x, out):
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else 0


@nb.njit(cache=True, fastmath=True)
def _relu_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] if y[i] > 0 else 0


@nb.njit(cache=True)
def _tanh_fwd(x, out):
    for i in range(x.size):
        out[i] = math.tanh(x[i])


@nb.njit(cache=True, fastmath=True)
def _tanh_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] * (1 - y[i] * y[i])


@nb.njit(cache=True)
def _sigmoid_fwd(x, out):
    for i in range(x.size):
        out[i] = 1 / (1 + math.exp(-x[i]))


@nb.njit(cache=True, fastmath=True)
def _sigmoid_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] * y[i] * (1 - y[i])


@nb.njit(cache=True)
def _gelu_fwd(x, out):
    for i in range(x.size):
        out[i] = 0.5 * x[i] * (1 + math.erf(x[i] * _SQRT_HALF))


@nb.njit(cache=True)
def _gelu_bwd(x, dy, out):
    for i in range(x.size):
        v = x[i]
        cdf = 0.5 * (1 + math.erf(v * _SQRT_HALF))
        out[i] = dy[i] * (cdf + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v))


@nb.njit(cache=True)
def _softmax_fwd(x, out):
    for r in range(x.shape[0]):
        m = x[r, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[r, j])
        s = 0.0
        for j in range(x.shape[1]):
            e = math.exp(x[r, j] - m)
            out[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(x.shape[1]):
            out[r, j] *= inv


@nb.njit(cache=True, fastmath=True)
def _softmax_bwd(y, dy, out):
    for r in range(y.shape[0]):
        s = 0.0
        for j in range(y.shape[1]):
            s += dy[r, j] * y[r, j]
        for j in range(y.shape[1]):
            out[r, j] = y[r, j] * (dy[r, j] - s)


def _unary(kernel):
    def run(x):
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        kernel(x.reshape(-1), out.reshape(-1))
        return out
    return run


def _binary(kernel):
    def run(a, dy):
        a, dy = np.ascontiguousarray(a), np.ascontiguousarray(dy, dtype=a.dtype)
        out = np.empty_like(a)
        kernel(a.reshape(-1), dy.reshape(-1), out.reshape(-1))
        return out
    return run


def _rows(kernel, n_inputs):
    def run(*arrays):
        arrays = [np.ascontiguousarray(a) for a in arrays[:n_inputs]]
        shape = arrays[0].shape
        flat = [a.reshape(-1, shape[-1]) for a in arrays]
        out = np.empty_like(flat[0])
        kernel(*flat, out)
        return out.reshape(shape)
    return run


relu_forward, relu_backward = _unary(_relu_fwd), _binary(_relu_bwd)
tanh_forward, tanh_backward = _unary(_tanh_fwd), _binary(_tanh_bwd)
sigmoid_forward, sigmoid_backward = _unary(_sigmoid_fwd), _binary(_sigmoid_bwd)
gelu_forward, gelu_backward = _unary(_gelu_fwd), _binary(_gelu_bwd)
softmax_forward, softmax_backward = _rows(_softmax_fwd, 1), _rows(_softmax_bwd, 2)

KERNELS = {
    f"{name}_{way}": (globals()[f"{name}_{way}"], globals()[f"{name}_{way}_reference"])
    for name in ("relu", "tanh", "sigmoid", "gelu", "softmax")
    for way in ("forward", "backward")
}
