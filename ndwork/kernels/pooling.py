"""Pooling along time: NHITS's multi-rate sampling (max pooling in ceil mode, linear
interpolation) and the edge-padded moving average of the decomposition models.

maxpool: x (R, L) -> (R, ceil(L / k)); the forward caches the argmax per window.
interpolate: x (R, n_in) -> (R, n_out), torch's `linear` with align_corners=False.
moving_average: x (B, T, ...) -> the same shape, the centered mean over an odd window
along axis 1, the ends repeated (NeuralForecast's SeriesDecomp), as differences of
float64 running sums: two additions a value whatever the window (a (T, T) matrix
product costs T), and no cancellation in float32.
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


def _edge_sources(length, window):
    """x's index (along time) of each point of the edge-padded series."""
    half = (window - 1) // 2
    return np.clip(np.arange(length + window - 1) - half, 0, length - 1)


def moving_average_forward_reference(x, window):
    padded = x.reshape(x.shape[0], x.shape[1], -1)[:, _edge_sources(x.shape[1], window)]
    sums = np.zeros((x.shape[0], padded.shape[1] + 1, padded.shape[2]))
    np.cumsum(padded, axis=1, dtype=np.float64, out=sums[:, 1:])
    return ((sums[:, window:] - sums[:, :-window]) / window).astype(x.dtype).reshape(x.shape)


def moving_average_backward_reference(dy, window):
    """The adjoint: each padded point gets the mean of the outputs whose window holds it,
    and a repeated end passes its share back to the end it repeats."""
    g = dy.reshape(dy.shape[0], dy.shape[1], -1)
    length = g.shape[1]
    sums = np.zeros((g.shape[0], length + 1, g.shape[2]))
    np.cumsum(g, axis=1, dtype=np.float64, out=sums[:, 1:])
    j = np.arange(length + window - 1)
    padded = (sums[:, np.minimum(j + 1, length)] - sums[:, np.maximum(j + 1 - window, 0)]) / window
    dx = np.zeros(g.shape)
    np.add.at(dx.transpose(1, 0, 2), _edge_sources(length, window), padded.transpose(1, 0, 2))
    return dx.astype(dy.dtype).reshape(dy.shape)


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


@jit
def _moving_average_fwd(x, window, out):
    """x, out (B, T, C): out[t] = (S[t + window] - S[t]) / window, S the running sums of
    the padded series (float64 rows of C, vectorized along C)."""
    batch, length, channels = x.shape
    half = (window - 1) // 2
    lead, lag = np.empty(channels), np.empty(channels)
    for b in range(batch):
        lead[:] = 0.0
        lag[:] = 0.0
        for j in range(window):
            source = min(max(j - half, 0), length - 1)
            for c in range(channels):
                lead[c] += x[b, source, c]
        for t in range(length):
            # after the last output the sums move on past the ends: harmless and branch-free
            enters, leaves = min(t + window - half, length - 1), max(t - half, 0)
            for c in range(channels):
                out[b, t, c] = (lead[c] - lag[c]) / window
                lag[c] += x[b, leaves, c]
                lead[c] += x[b, enters, c]


@jit
def _moving_average_bwd(dy, window, dx):
    """dy, dx (B, T, C), dx zeroed: padded point j gets (S[min(j + 1, T)] -
    S[max(j + 1 - window, 0)]) / window (S: dy's running sums), added to the point it
    repeats."""
    batch, length, channels = dy.shape
    half = (window - 1) // 2
    lead, lag = np.empty(channels), np.empty(channels)
    for b in range(batch):
        lead[:] = 0.0
        lag[:] = 0.0
        for j in range(length + window - 1):
            if j < length:
                for c in range(channels):
                    lead[c] += dy[b, j, c]
            if j + 1 > window:
                for c in range(channels):
                    lag[c] += dy[b, j - window, c]
            target = min(max(j - half, 0), length - 1)
            for c in range(channels):
                dx[b, target, c] += (lead[c] - lag[c]) / window


def _along_time(kernel, a, window, out):
    """Run a moving-average kernel over a (B, T, ...) seen as (B, T, C)."""
    kernel(a.reshape(a.shape[0], a.shape[1], -1), window, out.reshape(out.shape[0], out.shape[1], -1))
    return out


def moving_average_forward(x, window):
    x = np.ascontiguousarray(x)
    return _along_time(_moving_average_fwd, x, window, np.empty_like(x))


def moving_average_backward(dy, window):
    dy = np.ascontiguousarray(dy)
    return _along_time(_moving_average_bwd, dy, window, np.zeros_like(dy))


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
    "moving_average_forward": (moving_average_forward, moving_average_forward_reference),
    "moving_average_backward": (moving_average_backward, moving_average_backward_reference),
}
