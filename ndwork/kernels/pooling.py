"""NHITS's multi-rate sampling: max pooling (ceil mode) and linear interpolation.

maxpool: x (R, L) -> (R, ceil(L / k)); the forward caches the argmax per window.
interpolate: x (R, n_in) -> (R, n_out), torch's `linear` with align_corners=False.
"""

import functools

import numpy as np

from ndwork.kernels._jit import jit, jit_exact

# --- numpy reference -----------------------------------------------------------

def maxpool_forward_reference(x, kernel):
    """Returns (out, argmax) with argmax as column indices into x."""
    rows, length = x.shape
    n_out = -(-length // kernel)
    padded = np.full((rows, n_out * kernel), -np.inf, dtype=x.dtype)
    padded[:, :length] = x
    windows = padded.reshape(rows, n_out, kernel)
    local = windows.argmax(axis=2)
    out = np.take_along_axis(windows, local[..., None], axis=2)[..., 0]
    return out, local + np.arange(n_out) * kernel


def maxpool_backward_reference(dy, argmax, length):
    dx = np.zeros((dy.shape[0], length), dtype=dy.dtype)
    np.put_along_axis(dx, argmax, dy, axis=1)  # windows do not overlap: no collisions
    return dx


@functools.lru_cache(maxsize=256)
def interpolation_weights(n_in, n_out):
    """Left index, right index and right weight of each output point (align_corners=False);
    cached per size pair (a forecast asks for the same few every call), so read-only."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    left = np.minimum(src.astype(np.int64), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    weights = (left, right, src - left)
    for array in weights:
        array.flags.writeable = False
    return weights


def interpolate_forward_reference(x, n_out):
    left, right, w = interpolation_weights(x.shape[1], n_out)
    w = w.astype(x.dtype)
    return x[:, left] * (1 - w) + x[:, right] * w


def interpolate_backward_reference(dy, n_in):
    """Scatter-add each output's gradient to its two inputs (a product with the sparse
    interpolation matrix would also send a NaN to the inputs it does not touch)."""
    left, right, w = interpolation_weights(n_in, dy.shape[1])
    w = w.astype(dy.dtype)
    dx = np.zeros((dy.shape[0], n_in), dtype=dy.dtype)
    np.add.at(dx.T, left, (dy * (1 - w)).T)
    np.add.at(dx.T, right, (dy * w).T)
    return dx


# --- numba kernels ---------------------------------------------------------------

@jit_exact
def _maxpool_fwd(x, kernel, out, argmax):
    rows, length = x.shape
    for r in range(rows):
        for o in range(out.shape[1]):
            start = o * kernel
            best = x[r, start]
            best_j = start
            for j in range(start + 1, min(start + kernel, length)):
                if x[r, j] > best:
                    best = x[r, j]
                    best_j = j
            out[r, o] = best
            argmax[r, o] = best_j


@jit_exact
def _maxpool_bwd(dy, argmax, dx):
    for r in range(dy.shape[0]):
        for o in range(dy.shape[1]):
            dx[r, argmax[r, o]] += dy[r, o]


@jit
def _interp_fwd(x, left, right, w, out):
    for r in range(x.shape[0]):
        for o in range(out.shape[1]):
            out[r, o] = x[r, left[o]] * (1 - w[o]) + x[r, right[o]] * w[o]


@jit
def _interp_bwd(dy, left, right, w, dx):
    for r in range(dy.shape[0]):
        for o in range(dy.shape[1]):
            dx[r, left[o]] += dy[r, o] * (1 - w[o])
            dx[r, right[o]] += dy[r, o] * w[o]


def maxpool_forward(x, kernel):
    x = np.ascontiguousarray(x)
    n_out = -(-x.shape[1] // kernel)
    out = np.empty((x.shape[0], n_out), dtype=x.dtype)
    argmax = np.empty((x.shape[0], n_out), dtype=np.int64)
    _maxpool_fwd(x, kernel, out, argmax)
    return out, argmax


def maxpool_backward(dy, argmax, length):
    dx = np.zeros((dy.shape[0], length), dtype=dy.dtype)
    _maxpool_bwd(np.ascontiguousarray(dy), argmax, dx)
    return dx


def interpolate_forward(x, n_out):
    left, right, w = interpolation_weights(x.shape[1], n_out)
    out = np.empty((x.shape[0], n_out), dtype=x.dtype)
    _interp_fwd(np.ascontiguousarray(x), left, right, w.astype(x.dtype), out)
    return out


def interpolate_backward(dy, n_in):
    left, right, w = interpolation_weights(n_in, dy.shape[1])
    dx = np.zeros((dy.shape[0], n_in), dtype=dy.dtype)
    _interp_bwd(np.ascontiguousarray(dy), left, right, w.astype(dy.dtype), dx)
    return dx


KERNELS = {
    "maxpool_forward": (maxpool_forward, maxpool_forward_reference),
    "maxpool_backward": (maxpool_backward, maxpool_backward_reference),
    "interpolate_forward": (interpolate_forward, interpolate_forward_reference),
    "interpolate_backward": (interpolate_backward, interpolate_backward_reference),
}
