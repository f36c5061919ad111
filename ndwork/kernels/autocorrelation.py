"""Autoformer's auto-correlation, forward and backward.

Lag correlation: q, k (B, L, C) -> r (B, L), the circular cross-correlation of q and k
along time, averaged over channels: r[b, tau] = mean_c sum_t q[b, (t + tau) % L, c]
k[b, t, c] (NeuralForecast's irfft(rfft(q) * conj(rfft(k))), averaged over heads and
channels). The reference sums the L lags directly (O(L^2)); the fast path is one FFT per
channel (scipy.fft, see fourier.py), the same in its backward: a gradient g (B, L) gives
q the circular convolution of g with k, and k the circular correlation of q with g.

Time-delay aggregation: v (B, L, C), w (B, K), delays (B, K) integers ->
y[b, t] = sum_i w[b, i] v[b, (t + delays[b, i]) % L]: the values rolled by each selected
lag, weighted. The numba path reads v once per lag in place (no rolled copies); the
reference rolls.
"""

import numpy as np

from ndwork.kernels import fourier
from ndwork.kernels._jit import jit

# --- lag correlation -----------------------------------------------------------------

def lag_correlation_forward_reference(q, k):
    length = q.shape[1]
    lags = [(np.roll(q, -tau, axis=1) * k).sum(axis=1).mean(axis=-1) for tau in range(length)]
    return np.stack(lags, axis=1).astype(q.dtype)


def lag_correlation_backward_reference(q, k, g):
    """Returns (dq, dk)."""
    length, channels = q.shape[1], q.shape[2]
    dq, dk = np.zeros_like(q), np.zeros_like(k)
    for tau in range(length):
        weight = g[:, tau, None, None] / channels
        dq += weight * np.roll(k, tau, axis=1)
        dk += weight * np.roll(q, -tau, axis=1)
    return dq, dk


def lag_correlation_forward(q, k):
    length = q.shape[1]
    spectrum = (fourier.rfft(q, axis=1) * fourier.rfft(k, axis=1).conj()).mean(axis=2)
    return fourier.irfft(spectrum, length, axis=1).astype(q.dtype)


def lag_correlation_backward(q, k, g):
    length, channels = q.shape[1], q.shape[2]
    g_hat = fourier.rfft(g, axis=1)[:, :, None] / channels
    dq = fourier.irfft(g_hat * fourier.rfft(k, axis=1), length, axis=1)
    dk = fourier.irfft(fourier.rfft(q, axis=1) * g_hat.conj(), length, axis=1)
    return dq.astype(q.dtype), dk.astype(k.dtype)


# --- time-delay aggregation ------------------------------------------------------------

def delay_aggregate_forward_reference(v, w, delays):
    y = np.zeros_like(v)
    for b in range(v.shape[0]):
        for i in range(w.shape[1]):
            y[b] += w[b, i] * np.roll(v[b], -delays[b, i], axis=0)
    return y


def delay_aggregate_backward_reference(v, w, delays, g):
    """Returns (dv, dw)."""
    dv, dw = np.zeros_like(v), np.zeros_like(w)
    for b in range(v.shape[0]):
        for i in range(w.shape[1]):
            rolled = np.roll(v[b], -delays[b, i], axis=0)
            dw[b, i] = (g[b] * rolled).sum()
            dv[b] += w[b, i] * np.roll(g[b], delays[b, i], axis=0)
    return dv, dw


@jit
def _delay_aggregate_forward(v, w, delays, y):
    batch, length, channels = v.shape
    for b in range(batch):
        for i in range(w.shape[1]):
            weight, delay = w[b, i], delays[b, i] % length
            for t in range(length):
                src = t + delay
                if src >= length:
                    src -= length
                for c in range(channels):
                    y[b, t, c] += weight * v[b, src, c]


@jit
def _delay_aggregate_backward(v, w, delays, g, dv, dw):
    batch, length, channels = v.shape
    for b in range(batch):
        for i in range(w.shape[1]):
            weight, delay = w[b, i], delays[b, i] % length
            acc = 0.0
            for t in range(length):
                src = t + delay
                if src >= length:
                    src -= length
                for c in range(channels):
                    acc += g[b, t, c] * v[b, src, c]
                    dv[b, src, c] += weight * g[b, t, c]
            dw[b, i] = acc


def delay_aggregate_forward(v, w, delays):
    y = np.zeros_like(v)
    _delay_aggregate_forward(np.ascontiguousarray(v), np.ascontiguousarray(w),
                             np.ascontiguousarray(delays, np.int64), y)
    return y


def delay_aggregate_backward(v, w, delays, g):
    dv, dw = np.zeros_like(v), np.zeros_like(w)
    _delay_aggregate_backward(np.ascontiguousarray(v), np.ascontiguousarray(w),
                              np.ascontiguousarray(delays, np.int64), np.ascontiguousarray(g),
                              dv, dw)
    return dv, dw


KERNELS = {
    "lag_correlation_forward": (lag_correlation_forward, lag_correlation_forward_reference),
    "lag_correlation_backward": (lag_correlation_backward, lag_correlation_backward_reference),
    "delay_aggregate_forward": (delay_aggregate_forward, delay_aggregate_forward_reference),
    "delay_aggregate_backward": (delay_aggregate_backward, delay_aggregate_backward_reference),
}
