"""Elementwise activations, forward and backward, numba beside the numpy reference.

Arrays are any shape, float32 or float64. Backward takes what forward cached:
ReLU, tanh, sigmoid and ELU need only their output y; GLU its input x; GELU its slope
dy/dx, which its training forward writes beside y in the same pass (recomputing it
from x took an erf and an exp a value again: as long as the forward itself).
"""

import math

import numpy as np
from scipy.special import erf

from ndwork.kernels._jit import jit
from ndwork.kernels.fastmath import erf_from_exp, exp_chunk, exp_into

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
# float32 constants keep float32 loops in float32 (an int or float64 literal would
# promote every element to float64 and stop vectorization); float64 inputs stay float64.
_0, _HALF, _1, _2 = np.float32(0), np.float32(0.5), np.float32(1), np.float32(2)
_F_SQRT_HALF, _F_INV_SQRT_2PI = np.float32(_SQRT_HALF), np.float32(_INV_SQRT_2PI)


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


def gelu_train_forward_reference(x):
    """(y, slope): GELU and its derivative cdf + x pdf."""
    cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return gelu_forward_reference(x), (cdf + x * pdf).astype(x.dtype, copy=False)


def gelu_backward_reference(slope, dy):
    return dy * slope


def elu_forward_reference(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def elu_backward_reference(y, dy):
    return dy * np.where(y > 0, 1, y + 1).astype(y.dtype, copy=False)


def glu_forward_reference(x):
    """Gated linear unit over the last axis: its first half times the sigmoid of its
    second."""
    value, gate = np.split(x, 2, axis=-1)
    return value * sigmoid_forward_reference(gate)


def glu_backward_reference(x, dy):
    """Backward from the input (the gate is recomputed rather than kept)."""
    value, gate = np.split(x, 2, axis=-1)
    s = sigmoid_forward_reference(gate)
    return np.concatenate([dy * s, dy * value * s * (1 - s)], axis=-1)


def softmax_forward_reference(x):
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_reference(y, dy):
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


# --- numba kernels: flat loops over the raveled arrays ----------------------

@jit(inline="always")
def relu(v):
    return _0 if v <= _0 else v  # NaN stays NaN, as np.maximum


@jit(inline="always")
def relu_grad(y, dy):
    return dy * (_1 if y > _0 else _0)  # a non-finite dy gives NaN, as dy * mask


@jit
def _relu_fwd(x, out):
    for i in range(x.size):
        out[i] = relu(x[i])


@jit
def _relu_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = relu_grad(y[i], dy[i])


@jit
def _tanh_fwd(x, out):
    exp_into(x, out, 2.0)
    for i in range(x.size):
        out[i] = _1 - _2 / (out[i] + _1)


@jit
def _tanh_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] * (_1 - y[i] * y[i])


@jit
def _sigmoid_fwd(x, out):
    exp_into(x, out, -1.0)
    for i in range(x.size):
        out[i] = _1 / (_1 + out[i])


@jit
def _sigmoid_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] * y[i] * (_1 - y[i])


@jit
def _glu_fwd(x, out):
    """x (rows, 2w) -> out (rows, w): one pass, the gate's exp into out then the product."""
    width = out.shape[1]
    if x.itemsize != 4:
        for r in range(out.shape[0]):
            for j in range(width):
                out[r, j] = x[r, j] / (_1 + math.exp(-x[r, width + j]))
        return
    mantissas, powers = np.empty(width, np.float32), np.empty(width, np.int32)
    for r in range(out.shape[0]):
        row = out[r]
        exp_chunk(x[r][width:], row, np.float32(-1), mantissas, powers)
        for j in range(width):
            row[j] = x[r, j] / (_1 + row[j])


@jit
def _glu_bwd(x, dy, out):
    """x (rows, 2w), dy (rows, w) -> out (rows, 2w), the sigmoid recomputed in place."""
    width = dy.shape[1]
    mantissas, powers = np.empty(width, np.float32), np.empty(width, np.int32)
    for r in range(dy.shape[0]):
        gate = out[r][width:]
        if x.itemsize == 4:
            exp_chunk(x[r][width:], gate, np.float32(-1), mantissas, powers)
        else:
            for j in range(width):
                gate[j] = math.exp(-x[r, width + j])
        for j in range(width):
            s = _1 / (_1 + gate[j])
            out[r, j] = dy[r, j] * s
            gate[j] = dy[r, j] * x[r, j] * s * (_1 - s)


@jit
def _elu_fwd(x, out):
    exp_into(x, out)
    for i in range(x.size):
        out[i] = x[i] if x[i] > _0 else out[i] - _1


@jit
def _elu_bwd(y, dy, out):
    for i in range(y.size):
        out[i] = dy[i] if y[i] > _0 else dy[i] * (y[i] + _1)


@jit
def _gaussian(x, out):
    """out = exp(-x^2 / 2), the shared factor of GELU's cdf and pdf."""
    for i in range(x.size):
        out[i] = x[i] * x[i]
    exp_into(out, out, -0.5)


@jit
def _gelu_fwd(x, out):
    _gaussian(x, out)
    for i in range(x.size):
        out[i] = _HALF * x[i] * (_1 + erf_from_exp(x[i] * _F_SQRT_HALF, out[i]))


@jit
def _gelu_train_fwd(x, out, slope):
    _gaussian(x, slope)
    for i in range(x.size):
        cdf = _HALF * (_1 + erf_from_exp(x[i] * _F_SQRT_HALF, slope[i]))
        out[i] = x[i] * cdf
        slope[i] = cdf + x[i] * _F_INV_SQRT_2PI * slope[i]


@jit
def _gelu_bwd(slope, dy, out):
    for i in range(slope.size):
        out[i] = dy[i] * slope[i]


@jit
def _softmax_fwd(x, out):
    rows, cols = x.shape
    for r in range(rows):
        m = x[r, 0]
        for j in range(1, cols):
            if x[r, j] > m:  # a select, where max() would branch on NaN and stay scalar
                m = x[r, j]
        for j in range(cols):
            out[r, j] = x[r, j] - m
    flat = out.reshape(-1)
    exp_into(flat, flat)  # one bulk call: exp_into allocates scratch per call
    for r in range(rows):
        inv = _1 / out[r].sum()
        for j in range(cols):
            out[r, j] *= inv


@jit
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


def gelu_train_forward(x):
    x = np.ascontiguousarray(x)
    out, slope = np.empty_like(x), np.empty_like(x)
    _gelu_train_fwd(x.reshape(-1), out.reshape(-1), slope.reshape(-1))
    return out, slope


def glu_forward(x):
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty((flat.shape[0], flat.shape[1] // 2), x.dtype)
    _glu_fwd(flat, out)
    return out.reshape(*x.shape[:-1], -1)


def glu_backward(x, dy):
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    _glu_bwd(flat, np.ascontiguousarray(dy, x.dtype).reshape(flat.shape[0], -1), out)
    return out.reshape(x.shape)


relu_forward, relu_backward = _unary(_relu_fwd), _binary(_relu_bwd)
tanh_forward, tanh_backward = _unary(_tanh_fwd), _binary(_tanh_bwd)
sigmoid_forward, sigmoid_backward = _unary(_sigmoid_fwd), _binary(_sigmoid_bwd)
gelu_forward, gelu_backward = _unary(_gelu_fwd), _binary(_gelu_bwd)
elu_forward, elu_backward = _unary(_elu_fwd), _binary(_elu_bwd)
softmax_forward, softmax_backward = _rows(_softmax_fwd, 1), _rows(_softmax_bwd, 2)

KERNELS = {
    f"{name}_{way}": (globals()[f"{name}_{way}"], globals()[f"{name}_{way}_reference"])
    for name in ("relu", "tanh", "sigmoid", "gelu", "elu", "glu", "softmax")
    for way in ("forward", "backward")
}
KERNELS["gelu_train_forward"] = (gelu_train_forward, gelu_train_forward_reference)
