"""Linear layer y = act(x @ W + b) with the bias and activation fused into one pass.

x: (B, in), W: (in, out), b: (out,), y: (B, out). The GEMMs go through BLAS in both
paths (the compiled one's through `gemm.matmul`: the BLAS measured fastest per shape).
Mixed precision: x (and y, kept by the layer) may be stored in bfloat16 or float16;
W given in one means the GEMMs run in it: dz is rounded to it too, and they accumulate
in float32 (the reference computes on the exactly widened operands).
The numba path fuses bias + activation after the forward GEMM and
activation-derivative + bias-gradient before the backward GEMMs, saving passes over
(B, out). Activations here are the ones whose derivative follows from the output y
("identity", "relu", "tanh", "sigmoid"), so the forward caches only y.
"""

import numpy as np

from ndwork.kernels._jit import jit
from ndwork.kernels.activations import (
    _sigmoid_bwd,
    _sigmoid_fwd,
    _tanh_bwd,
    _tanh_fwd,
    relu,
    relu_grad,
)
from ndwork.kernels.gemm import matmul
from ndwork.kernels.precision import BF16, LOW, bf16_of_float32, float32_of_bf16, to_low, widen

ACTIVATIONS = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def _activation_code(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not fusable; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


# --- numpy reference ---------------------------------------------------------

def linear_forward_reference(x, W, b, activation="identity"):
    z = widen(x) @ widen(W)  # low-precision operands: their exact float32 values
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
    """Returns (dx, dW, db); dx is None when need_dx is False (first layer). With W in
    a low precision (mixed precision), the GEMMs take dz rounded to it too."""
    dz = _activation_grad_reference(widen(y), dy, _activation_code(activation))
    db = dz.sum(axis=0)
    dz_gemm = widen(to_low(dz, W.dtype)) if W.dtype in LOW else dz
    dW = widen(x).T @ dz_gemm
    dx = dz_gemm @ widen(W).T if need_dx else None
    return dx, dW, db


# --- numba path ----------------------------------------------------------------
# The activations and their derivatives are those of activations.py: ReLU's inlined
# into the bias loop, the others applied after it (row by row for the derivatives, so
# each row is still in cache).

@jit
def _bias_activation(z, b, code):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = relu(z[i, j] + b[j]) if code == 1 else z[i, j] + b[j]
    flat = z.reshape(-1)
    if code == 2:  # one bulk call: exp_into allocates its scratch per call
        _tanh_fwd(flat, flat)
    elif code == 3:
        _sigmoid_fwd(flat, flat)


@jit
def _activation_grad_and_bias(y, dy, code, dz):
    """dz = dy * act'(y), and db = sum_rows(dz), in one pass."""
    n, m = y.shape
    db = np.zeros(m, dtype=np.float64)
    for i in range(n):
        if code == 1:
            for j in range(m):
                dz[i, j] = relu_grad(y[i, j], dy[i, j])
        elif code == 2:
            _tanh_bwd(y[i], dy[i], dz[i])
        elif code == 3:
            _sigmoid_bwd(y[i], dy[i], dz[i])
        else:
            dz[i] = dy[i]
        for j in range(m):
            db[j] += dz[i, j]
    return db.astype(dy.dtype)


@jit
def _column_sums(dy):
    """db of an identity layer, whose dz is dy itself: no copy, one read."""
    db = np.zeros(dy.shape[1], dtype=np.float64)
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            db[j] += dy[i, j]
    return db.astype(dy.dtype)


@jit
def _activation_grad_and_bias_bf16(y_bits, dy, code, dz_bits):
    """_activation_grad_and_bias for a bfloat16 y (bits in, widened in registers) that
    writes dz rounded to bfloat16 (the GEMMs' operand) and sums db from the float32 dz:
    one pass instead of widening y, writing dz and rounding it."""
    n, m = dy.shape
    db = np.zeros(m, dtype=np.float64)
    y = np.empty(m, dtype=np.float32)
    dz = np.empty(m, dtype=np.float32)
    for i in range(n):
        for j in range(m):
            y[j] = float32_of_bf16(y_bits[i, j])
        if code == 1:
            for j in range(m):
                dz[j] = relu_grad(y[j], dy[i, j])
        elif code == 2:
            _tanh_bwd(y, dy[i], dz)
        elif code == 3:
            _sigmoid_bwd(y, dy[i], dz)
        else:
            dz[:] = dy[i]
        for j in range(m):
            db[j] += dz[j]
            dz_bits[i, j] = bf16_of_float32(dz[j])
    return db.astype(dy.dtype)


def linear_forward(x, W, b, activation="identity"):
    code = _activation_code(activation)
    z = matmul(x, W)
    if b is None:
        b = np.zeros(W.shape[1], dtype=z.dtype)
    _bias_activation(z, b, code)
    return z


def linear_backward(x, W, y, dy, activation="identity", need_dx=True):
    dy = np.ascontiguousarray(dy)
    code = _activation_code(activation)
    if W.dtype == BF16 and y.dtype == BF16 and y.flags.c_contiguous:  # fused, one pass
        dz = np.empty(dy.shape, BF16)
        db = _activation_grad_and_bias_bf16(y.view(np.uint16), dy, code, dz.view(np.uint16))
    elif code == 0 and W.dtype not in LOW:
        dz, db = dy, _column_sums(dy)
    else:
        dz = np.empty_like(dy)
        db = _activation_grad_and_bias(widen(y), dy, code, dz)
        if W.dtype in LOW:
            dz = to_low(dz, W.dtype)
    dW = matmul(x.T, dz)
    dx = matmul(dz, W.T) if need_dx else None
    return dx, dW, db


KERNELS = {
    "linear_forward": (linear_forward, linear_forward_reference),
    "linear_backward": (linear_backward, linear_backward_reference),
}
