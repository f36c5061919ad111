"""Causal dilated 1-D convolution (TCN's), forward and backward.

x (B, T, C_in), w (K, C_in, C_out), y (B, T, C_out):
y[:, t] = sum_k x[:, t - (K - 1 - k) * dilation] @ w[k], with zeros before the start:
PyTorch's Conv1d with (K - 1) * dilation zeros of left padding and the right end chomped,
w[k, i, o] = torch_weight[o, i, k]. Bias and activation are added by the caller.

The reference sums K shifted GEMMs. The numba path gathers the K shifted copies side by
side (im2col, (B * T, K * C_in)) and runs one GEMM; its backward scatters the columns'
gradient back (col2im). Nothing is kept for the backward but x.
"""

import numpy as np

from ndwork.kernels._jit import jit


def _shift(k: int, kernel_size: int, dilation: int) -> int:
    return (kernel_size - 1 - k) * dilation


# --- numpy reference ------------------------------------------------------------

def causal_conv1d_forward_reference(x, w, dilation):
    b, t, _ = x.shape
    kernel_size = w.shape[0]
    y = np.zeros((b, t, w.shape[2]), x.dtype)
    for k in range(kernel_size):
        s = _shift(k, kernel_size, dilation)
        if s < t:
            y[:, s:] += x[:, : t - s] @ w[k]
    return y


def causal_conv1d_backward_reference(x, w, dilation, dy):
    """Returns (dx, dw)."""
    b, t, c_in = x.shape
    kernel_size = w.shape[0]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for k in range(kernel_size):
        s = _shift(k, kernel_size, dilation)
        if s < t:
            dx[:, : t - s] += dy[:, s:] @ w[k].T
            dw[k] = x[:, : t - s].reshape(-1, c_in).T @ dy[:, s:].reshape(-1, w.shape[2])
    return dx, dw


# --- numba path: im2col, one GEMM, col2im ------------------------------------------

@jit
def _im2col(x, kernel_size, dilation, cols):
    b, t, c_in = x.shape
    for i in range(b):
        for s in range(t):
            row = cols[i * t + s]
            for k in range(kernel_size):
                src = s - (kernel_size - 1 - k) * dilation
                for c in range(c_in):
                    row[k * c_in + c] = x[i, src, c] if src >= 0 else 0


@jit
def _col2im(dcols, kernel_size, dilation, dx):
    b, t, c_in = dx.shape
    for i in range(b):
        for s in range(t):
            row = dcols[i * t + s]
            for k in range(kernel_size):
                src = s - (kernel_size - 1 - k) * dilation
                if src >= 0:
                    for c in range(c_in):
                        dx[i, src, c] += row[k * c_in + c]


def _columns(x, kernel_size, dilation):
    b, t, c_in = x.shape
    cols = np.empty((b * t, kernel_size * c_in), x.dtype)
    _im2col(np.ascontiguousarray(x), kernel_size, dilation, cols)
    return cols


def causal_conv1d_forward(x, w, dilation):
    b, t, _ = x.shape
    kernel_size, c_in, c_out = w.shape
    cols = _columns(x, kernel_size, dilation)
    return (cols @ w.reshape(kernel_size * c_in, c_out)).reshape(b, t, c_out)


def causal_conv1d_backward(x, w, dilation, dy):
    kernel_size, c_in, c_out = w.shape
    dy2 = np.ascontiguousarray(dy).reshape(-1, c_out)
    w2 = w.reshape(kernel_size * c_in, c_out)
    dw = (_columns(x, kernel_size, dilation).T @ dy2).reshape(w.shape)
    dx = np.zeros_like(x)
    _col2im(dy2 @ w2.T, kernel_size, dilation, dx)
    return dx, dw


KERNELS = {
    "causal_conv1d_forward": (causal_conv1d_forward, causal_conv1d_forward_reference),
    "causal_conv1d_backward": (causal_conv1d_backward, causal_conv1d_backward_reference),
}
