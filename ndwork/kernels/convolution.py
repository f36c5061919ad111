"""Causal dilated 1-D convolution (TCN's) and same-padded 2-D convolution (TimesNet's),
forward and backward.

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


# --- 2-D convolution, zero "same" padding --------------------------------------------
# x (B, H, W, C_in) channels last, w (Kh, Kw, C_in, C_out), both kernel sizes odd:
# y[:, r, c] = sum_{a, e} x[:, r + a - Kh // 2, c + e - Kw // 2] @ w[a, e], zeros outside,
# w[a, e, i, o] = torch_weight[o, i, a, e]. The reference sums Kh * Kw shifted GEMMs; the
# numba path gathers the taps side by side (im2col) for one GEMM, forward and backward,
# keeping nothing but x for the backward.

def _tap_ranges(offset: int, size: int) -> tuple[slice, slice]:
    """Destination and source ranges of one tap shifted by `offset` along an axis."""
    return slice(max(0, -offset), size - max(0, offset)), slice(max(0, offset),
                                                                 size + min(0, offset))


def conv2d_forward_reference(x, w):
    b, hh, ww, _ = x.shape
    kh, kw = w.shape[:2]
    y = np.zeros((b, hh, ww, w.shape[3]), x.dtype)
    for a in range(kh):
        rows = _tap_ranges(a - kh // 2, hh)
        for e in range(kw):
            cols = _tap_ranges(e - kw // 2, ww)
            y[:, rows[0], cols[0]] += x[:, rows[1], cols[1]] @ w[a, e]
    return y


def conv2d_backward_reference(x, w, dy):
    """Returns (dx, dw)."""
    hh, ww, c_in = x.shape[1:]
    kh, kw = w.shape[:2]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for a in range(kh):
        rows = _tap_ranges(a - kh // 2, hh)
        for e in range(kw):
            cols = _tap_ranges(e - kw // 2, ww)
            grad = dy[:, rows[0], cols[0]]
            dx[:, rows[1], cols[1]] += grad @ w[a, e].T
            dw[a, e] = x[:, rows[1], cols[1]].reshape(-1, c_in).T @ grad.reshape(-1, w.shape[3])
    return dx, dw


@jit
def _im2col2d(x, kh, kw, cols):
    b, hh, ww, c_in = x.shape
    for i in range(b):
        for r in range(hh):
            for s in range(ww):
                row = cols[(i * hh + r) * ww + s]
                for a in range(kh):
                    src_r = r + a - kh // 2
                    for e in range(kw):
                        src_c = s + e - kw // 2
                        base = (a * kw + e) * c_in
                        inside = 0 <= src_r < hh and 0 <= src_c < ww
                        for c in range(c_in):
                            row[base + c] = x[i, src_r, src_c, c] if inside else 0


def _columns2d(x, kh, kw):
    b, hh, ww, c_in = x.shape
    cols = np.empty((b * hh * ww, kh * kw * c_in), x.dtype)
    _im2col2d(np.ascontiguousarray(x), kh, kw, cols)
    return cols


def conv2d_forward(x, w):
    kh, kw, c_in, c_out = w.shape
    y = _columns2d(x, kh, kw) @ np.ascontiguousarray(w).reshape(kh * kw * c_in, c_out)
    return y.reshape(*x.shape[:3], c_out)


def conv2d_backward(x, w, dy):
    """Both gradients from one gather of dy: column (a, e) of D holds, at each input
    position, the output gradient of the output that read it through the flipped tap, so
    dx = D @ (w flipped) and dw = x^T D. (Gathering x instead would multiply the zeros
    of the padding by dy, turning an infinite dy into NaN where no output read it.)"""
    kh, kw, c_in, c_out = w.shape
    d = _columns2d(dy, kh, kw)  # (B * H * W, Kh * Kw * C_out)
    flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(-1, c_in)
    dx = (d @ flipped).reshape(x.shape)
    dw = np.ascontiguousarray(x).reshape(-1, c_in).T @ d  # (C_in, Kh * Kw * C_out)
    dw = dw.reshape(c_in, kh, kw, c_out)[:, ::-1, ::-1].transpose(1, 2, 0, 3)
    return dx, np.ascontiguousarray(dw)


KERNELS = {
    "causal_conv1d_forward": (causal_conv1d_forward, causal_conv1d_forward_reference),
    "causal_conv1d_backward": (causal_conv1d_backward, causal_conv1d_backward_reference),
    "conv2d_forward": (conv2d_forward, conv2d_forward_reference),
    "conv2d_backward": (conv2d_backward, conv2d_backward_reference),
}
