"""Recurrent cells over a whole sequence, forward and backward through time: Elman RNN
(tanh or relu), LSTM and GRU, with PyTorch's gate order and equations.

Shapes: B = windows, T = time steps, H = hidden size, G = gates x H (RNN 1, GRU 3,
LSTM 4). Every sequence is time-major, (T, B, .), so that each step's slice is one
contiguous block. The input projection of every step, xw = x @ W_ih + biases (T, B, G), is one
GEMM done by the caller (ops.recurrent); these kernels run the recurrence from a zero
state: each step's hidden-to-hidden product h @ W_hh (H, G) goes through BLAS, and the
gate arithmetic is fused around it (one numba kernel per step on the compiled path).

What the forward keeps for the backward, and nothing more:
RNN: the hidden states h (T, B, H).
LSTM: h, the cell states c (T, B, H) and the gate activations (T, B, 4H) (i, f, g, o).
With a projection W_hr (H, P) (PyTorch's proj_size), the output and recurrent state is
h = (o * tanh(c)) @ W_hr (T, B, P), and W_hh is (P, 4H).
GRU: h, the gate activations (T, B, 3H) (r, z, n) and W_hn h + b_hn (T, B, H), which the
reset gate multiplies (so b_hh enters per step: it is passed here, not folded in xw).

Backward takes dh (T, B, H), the gradient of every output hidden state (the compiled
LSTM backward writes its result over `gates`, which it consumes), and returns
dxw (T, B, G) (so the caller's GEMMs give dx, dW_ih and the input biases) and dW_hh
(plus db_hh for GRU).

LSTM and GRU can start from a given state (TFT's encoders: h0, and LSTM's c0, each
(B, H)); their backward then also returns the gradient of that state (dh0, and dc0),
and LSTM's takes the gradient of its cell states too (dcell, (T, B, H)), for a state
handed on to another recurrence.
"""

import numba as nb
import numpy as np

from ndwork.kernels import gemm
from ndwork.kernels._jit import jit, jit_parallel
from ndwork.kernels.activations import _sigmoid_fwd, _tanh_fwd, relu, relu_grad

CELLS = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


# --- numpy references ----------------------------------------------------------

def _previous(h, h0=None):
    """(T * B, H): the state each step started from (h0, or zeros, at the first)."""
    previous = np.zeros_like(h)
    previous[1:] = h[:-1]
    if h0 is not None:
        previous[0] = h0
    return previous.reshape(-1, h.shape[2])


def rnn_forward_reference(xw, w_hh, activation, h0=None):
    t, b, hidden = xw.shape
    h = np.zeros((t, b, hidden), xw.dtype)
    prev = np.zeros((b, hidden), xw.dtype) if h0 is None else h0
    for s in range(t):
        z = xw[s] + prev @ w_hh
        prev = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
        h[s] = prev
    return (h,)


def rnn_backward_reference(w_hh, h, dh, activation):
    t, b, hidden = h.shape
    dxw = np.empty_like(h)
    carry = np.zeros((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        g = dh[s] + carry
        dz = g * (1 - h[s] ** 2) if activation == "tanh" else g * (h[s] > 0)
        dxw[s] = dz
        carry = dz @ w_hh.T
    dw_hh = _previous(h).T @ dxw.reshape(-1, hidden)
    return dxw, dw_hh


def lstm_forward_reference(xw, w_hh, w_hr=None, h0=None, c0=None):
    t, b, g4 = xw.shape
    hidden = g4 // 4
    out = hidden if w_hr is None else w_hr.shape[1]
    h = np.zeros((t, b, out), xw.dtype)
    c = np.zeros((t, b, hidden), xw.dtype)
    gates = np.empty((t, b, g4), xw.dtype)
    h_prev = np.zeros((b, out), xw.dtype) if h0 is None else h0
    c_prev = np.zeros((b, hidden), xw.dtype) if c0 is None else c0
    for s in range(t):
        z = xw[s] + h_prev @ w_hh
        i, f = _sigmoid(z[:, :hidden]), _sigmoid(z[:, hidden:2 * hidden])
        g, o = np.tanh(z[:, 2 * hidden:3 * hidden]), _sigmoid(z[:, 3 * hidden:])
        c_prev = f * c_prev + i * g
        h_prev = o * np.tanh(c_prev)
        if w_hr is not None:
            h_prev = h_prev @ w_hr
        gates[s] = np.concatenate([i, f, g, o], axis=1)
        h[s], c[s] = h_prev, c_prev
    return h, c, gates


def lstm_backward_reference(w_hh, h, c, gates, dh, w_hr=None, h0=None, c0=None,
                            dcell=None):
    """Returns (dxw, dW_hh), and dW_hr after them with a projection, and (dh0, dc0)
    after them from a given state."""
    t, b, hidden = c.shape
    dxw = np.empty_like(gates)
    dh_carry = np.zeros((b, h.shape[2]), h.dtype)
    dc_carry = np.zeros((b, hidden), h.dtype)
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)
    for s in range(t - 1, -1, -1):
        if dcell is not None:
            dc_carry = dc_carry + dcell[s]
        i, f = gates[s, :, :hidden], gates[s, :, hidden:2 * hidden]
        g, o = gates[s, :, 2 * hidden:3 * hidden], gates[s, :, 3 * hidden:]
        tanh_c = np.tanh(c[s])
        c_prev = c[s - 1] if s else (np.zeros_like(tanh_c) if c0 is None else c0)
        dh_s = dh[s] + dh_carry
        if w_hr is not None:  # back through the projection
            dw_hr += (o * tanh_c).T @ dh_s
            dh_s = dh_s @ w_hr.T
        dc = dc_carry + dh_s * o * (1 - tanh_c**2)
        dz = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                             dc * i * (1 - g * g), dh_s * tanh_c * o * (1 - o)], axis=1)
        dxw[s] = dz
        dc_carry = dc * f
        dh_carry = dz @ w_hh.T
    dw_hh = _previous(h, h0).T @ dxw.reshape(-1, 4 * hidden)
    grads = (dxw, dw_hh) if w_hr is None else (dxw, dw_hh, dw_hr)
    return grads if h0 is None else (*grads, dh_carry, dc_carry)


def gru_forward_reference(xw, w_hh, b_hh, h0=None):
    t, b, g3 = xw.shape
    hidden = g3 // 3
    h = np.zeros((t, b, hidden), xw.dtype)
    gates = np.empty((t, b, g3), xw.dtype)
    hn = np.empty((t, b, hidden), xw.dtype)
    prev = np.zeros((b, hidden), xw.dtype) if h0 is None else h0
    for s in range(t):
        hw = prev @ w_hh + b_hh
        r = _sigmoid(xw[s, :, :hidden] + hw[:, :hidden])
        z = _sigmoid(xw[s, :, hidden:2 * hidden] + hw[:, hidden:2 * hidden])
        n = np.tanh(xw[s, :, 2 * hidden:] + r * hw[:, 2 * hidden:])
        prev = (1 - z) * n + z * prev
        gates[s] = np.concatenate([r, z, n], axis=1)
        hn[s], h[s] = hw[:, 2 * hidden:], prev
    return h, gates, hn


def gru_backward_reference(w_hh, h, gates, hn, dh, h0=None):
    """Returns (dxw, dW_hh, db_hh), and dh0 after them from a given state."""
    t, b, hidden = h.shape
    dxw = np.empty_like(gates)
    dhw = np.empty_like(gates)  # gradient of h_prev @ W_hh + b_hh
    carry = np.zeros((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        r, z, n = gates[s, :, :hidden], gates[s, :, hidden:2 * hidden], gates[s, :, 2 * hidden:]
        h_prev = h[s - 1] if s else (np.zeros_like(r) if h0 is None else h0)
        dh_s = dh[s] + carry
        dn = dh_s * (1 - z) * (1 - n * n)
        dz = dh_s * (h_prev - n) * z * (1 - z)
        dr = dn * hn[s] * r * (1 - r)
        dxw[s] = np.concatenate([dr, dz, dn], axis=1)
        dhw[s] = np.concatenate([dr, dz, dn * r], axis=1)
        carry = dh_s * z + dhw[s] @ w_hh.T
    dw_hh = _previous(h, h0).T @ dhw.reshape(-1, 3 * hidden)
    grads = (dxw, dw_hh, dhw.reshape(-1, 3 * hidden).sum(axis=0))
    return grads if h0 is None else (*grads, carry)


# --- compiled path -------------------------------------------------------------------
# A step is one product through numpy's
# BLAS (threaded, unlike BLAS called from numba, which fit pins to one thread for the
# parallel kernels), then one fused numba kernel over contiguous (B, G) rows in which
# the sigmoids and tanhs are activations.py's kernels, in bulk over each step.

_1, _2 = np.float32(1), np.float32(2)


@jit
def _rnn_step(z, xw_s, use_tanh, h_s):
    """h_s = act(z + xw_s)."""
    b, hidden = z.shape
    for i in range(b):
        for j in range(hidden):
            h_s[i, j] = z[i, j] + xw_s[i, j]
    flat = h_s.reshape(-1)
    if use_tanh:
        _tanh_fwd(flat, flat)
    else:
        for k in range(flat.size):
            flat[k] = relu(flat[k])


@jit
def _rnn_step_back(h_s, dh_s, carry, use_tanh, dz):
    """dz = (dh_s + carry) * act'(h_s)."""
    b, hidden = h_s.shape
    for i in range(b):
        for j in range(hidden):
            g = dh_s[i, j] + carry[i, j]
            y = h_s[i, j]
            dz[i, j] = g * (_1 - y * y) if use_tanh else relu_grad(y, g)


@jit
def _lstm_step(z, xw_s, c_prev, gates_s, c_s, h_s):
    """gates (i, f, g, o) from z + xw_s, then c_s and h_s; z is overwritten."""
    b, g4 = z.shape
    hidden = g4 // 4
    for i in range(b):
        for j in range(g4):
            gates_s[i, j] = z[i, j] + xw_s[i, j]
        for j in range(2 * hidden, 3 * hidden):  # tanh(v) = 2 sigmoid(2v) - 1
            gates_s[i, j] *= _2
    flat = gates_s.reshape(-1)
    _sigmoid_fwd(flat, flat)
    for i in range(b):
        for j in range(hidden):
            g = _2 * gates_s[i, 2 * hidden + j] - _1
            gates_s[i, 2 * hidden + j] = g
            c_s[i, j] = gates_s[i, hidden + j] * c_prev[i, j] + gates_s[i, j] * g
            h_s[i, j] = c_s[i, j]
    tanh_c = h_s.reshape(-1)
    _tanh_fwd(tanh_c, tanh_c)
    for i in range(b):
        for j in range(hidden):
            h_s[i, j] *= gates_s[i, 3 * hidden + j]


@jit
def _lstm_step_back(gates_s, c_s, c_prev, dh_s, dh_carry, dc_carry, dz, tanh_c):
    """dz (B, 4H) of one step; dc_carry is updated in place."""
    b, hidden = c_s.shape
    for i in range(b):
        for j in range(hidden):
            tanh_c[i, j] = c_s[i, j]
    flat = tanh_c.reshape(-1)
    _tanh_fwd(flat, flat)
    for i in range(b):
        for j in range(hidden):
            ig, fg = gates_s[i, j], gates_s[i, hidden + j]
            gg, og = gates_s[i, 2 * hidden + j], gates_s[i, 3 * hidden + j]
            tc = tanh_c[i, j]
            dh = dh_s[i, j] + dh_carry[i, j]
            dc = dc_carry[i, j] + dh * og * (_1 - tc * tc)
            dz[i, j] = dc * gg * ig * (_1 - ig)
            dz[i, hidden + j] = dc * c_prev[i, j] * fg * (_1 - fg)
            dz[i, 2 * hidden + j] = dc * ig * (_1 - gg * gg)
            dz[i, 3 * hidden + j] = dh * tc * og * (_1 - og)
            dc_carry[i, j] = dc * fg


@jit
def _gru_step(hw, b_hh, xw_s, h_prev, gates_s, hn_s, h_s, rz):
    """hw = h_prev @ W_hh (bias added here); gates (r, z, n), W_hn h + b_hn, and h_s."""
    b, g3 = hw.shape
    hidden = g3 // 3
    for i in range(b):
        for j in range(g3):
            hw[i, j] += b_hh[j]
        for j in range(2 * hidden):
            rz[i, j] = xw_s[i, j] + hw[i, j]
    flat = rz.reshape(-1)
    _sigmoid_fwd(flat, flat)
    for i in range(b):
        for j in range(2 * hidden):
            gates_s[i, j] = rz[i, j]
        for j in range(hidden):
            hn_s[i, j] = hw[i, 2 * hidden + j]
            h_s[i, j] = xw_s[i, 2 * hidden + j] + gates_s[i, j] * hn_s[i, j]
    flat = h_s.reshape(-1)
    _tanh_fwd(flat, flat)
    for i in range(b):
        for j in range(hidden):
            n, zg = h_s[i, j], gates_s[i, hidden + j]
            gates_s[i, 2 * hidden + j] = n
            h_s[i, j] = (_1 - zg) * n + zg * h_prev[i, j]


@jit
def _gru_step_back(gates_s, hn_s, h_prev, dh_s, carry, dxw_s, dhw_s):
    """dxw (dr, dz, dn) and dhw (dr, dz, dn r) of one step; carry <- dh z (the part of
    the previous state's gradient that skips W_hh)."""
    b, hidden = hn_s.shape
    for i in range(b):
        for j in range(hidden):
            r, zg = gates_s[i, j], gates_s[i, hidden + j]
            n = gates_s[i, 2 * hidden + j]
            dh = dh_s[i, j] + carry[i, j]
            dn = dh * (_1 - zg) * (_1 - n * n)
            dzg = dh * (h_prev[i, j] - n) * zg * (_1 - zg)
            dr = dn * hn_s[i, j] * r * (_1 - r)
            dxw_s[i, j], dxw_s[i, hidden + j], dxw_s[i, 2 * hidden + j] = dr, dzg, dn
            dhw_s[i, j], dhw_s[i, hidden + j], dhw_s[i, 2 * hidden + j] = dr, dzg, dn * r
            carry[i, j] = dh * zg


# Wide steps (many windows) split their rows between numba's threads: between two
# products (which use every core) the gate arithmetic ran on one, a third of an LSTM
# fit. Measured on the 2-core AMD EPYC (AVX2), LSTM step 1024 x 128: 0.87-1.19 ms on one
# thread, 0.52-0.59 on two. Smaller steps stay on one: a launch costs microseconds.
PARALLEL_WORK = 2**15  # rows x gate columns


def _parts(rows: int, width: int) -> int:
    """Into how many row blocks a step of rows x width splits (asked here, not in the
    kernels: numba cannot cache a kernel that asks for its thread count)."""
    return 1 if rows * width < PARALLEL_WORK else min(nb.get_num_threads(), rows)


@jit
def _block(part, parts, rows):
    return part * rows // parts, (part + 1) * rows // parts


@jit_parallel
def _rnn_step_rows(parts, z, xw_s, use_tanh, h_s):
    if parts == 1:
        return _rnn_step(z, xw_s, use_tanh, h_s)
    for p in nb.prange(parts):
        a, b = _block(p, parts, z.shape[0])
        _rnn_step(z[a:b], xw_s[a:b], use_tanh, h_s[a:b])


@jit_parallel
def _rnn_step_back_rows(parts, h_s, dh_s, carry, use_tanh, dz):
    if parts == 1:
        return _rnn_step_back(h_s, dh_s, carry, use_tanh, dz)
    for p in nb.prange(parts):
        a, b = _block(p, parts, h_s.shape[0])
        _rnn_step_back(h_s[a:b], dh_s[a:b], carry[a:b], use_tanh, dz[a:b])


@jit_parallel
def _lstm_step_rows(parts, z, xw_s, c_prev, gates_s, c_s, h_s):
    if parts == 1:
        return _lstm_step(z, xw_s, c_prev, gates_s, c_s, h_s)
    for p in nb.prange(parts):
        a, b = _block(p, parts, z.shape[0])
        _lstm_step(z[a:b], xw_s[a:b], c_prev[a:b], gates_s[a:b], c_s[a:b], h_s[a:b])


@jit_parallel
def _lstm_step_back_rows(parts, gates_s, c_s, c_prev, dh_s, dh_carry, dc_carry, dz, tanh_c):
    if parts == 1:
        return _lstm_step_back(gates_s, c_s, c_prev, dh_s, dh_carry, dc_carry, dz, tanh_c)
    for p in nb.prange(parts):
        a, b = _block(p, parts, gates_s.shape[0])
        _lstm_step_back(gates_s[a:b], c_s[a:b], c_prev[a:b], dh_s[a:b], dh_carry[a:b],
                        dc_carry[a:b], dz[a:b], tanh_c[a:b])


@jit_parallel
def _gru_step_rows(parts, hw, b_hh, xw_s, h_prev, gates_s, hn_s, h_s, rz):
    if parts == 1:
        return _gru_step(hw, b_hh, xw_s, h_prev, gates_s, hn_s, h_s, rz)
    for p in nb.prange(parts):
        a, b = _block(p, parts, hw.shape[0])
        _gru_step(hw[a:b], b_hh, xw_s[a:b], h_prev[a:b], gates_s[a:b], hn_s[a:b], h_s[a:b],
                  rz[a:b])


@jit_parallel
def _gru_step_back_rows(parts, gates_s, hn_s, h_prev, dh_s, carry, dxw_s, dhw_s):
    if parts == 1:
        return _gru_step_back(gates_s, hn_s, h_prev, dh_s, carry, dxw_s, dhw_s)
    for p in nb.prange(parts):
        a, b = _block(p, parts, gates_s.shape[0])
        _gru_step_back(gates_s[a:b], hn_s[a:b], h_prev[a:b], dh_s[a:b], carry[a:b],
                       dxw_s[a:b], dhw_s[a:b])


def rnn_forward(xw, w_hh, activation, h0=None):
    xw_t = np.ascontiguousarray(xw)
    t, b, hidden = xw_t.shape
    h_t = np.empty_like(xw_t)
    z = np.zeros((b, hidden), xw.dtype)
    parts = _parts(b, hidden)
    for s in range(t):
        if s or h0 is not None:
            gemm.matmul(h_t[s - 1] if s else np.ascontiguousarray(h0, xw.dtype), w_hh, out=z)
        _rnn_step_rows(parts, z, xw_t[s], activation == "tanh", h_t[s])
    return (h_t,)


def rnn_backward(w_hh, h, dh, activation):
    h_t, dh_t = h, np.ascontiguousarray(dh, h.dtype)
    t, b, hidden = h_t.shape
    w_t = np.ascontiguousarray(w_hh.T)
    dz_t = np.empty_like(h_t)
    carry = np.zeros((b, hidden), h.dtype)
    parts = _parts(b, hidden)
    for s in range(t - 1, -1, -1):
        _rnn_step_back_rows(parts, h_t[s], dh_t[s], carry, activation == "tanh", dz_t[s])
        gemm.matmul(dz_t[s], w_t, out=carry)
    dw_hh = gemm.matmul(_previous(h_t).T, dz_t.reshape(-1, hidden))
    return dz_t, dw_hh


# A few windows (forecasting one series): the whole LSTM (GRU) sequence in one numba call, its
# hidden products as vectorized loops; at this size BLAS and Python's per-step round
# trips cost more than the arithmetic. Measured on the 2-core AMD EPYC, T=24, fused vs per
# step: LSTM H=128, 1 window 77 vs 102 us, 4 windows 239 vs 375, 8 windows 478 vs 381;
# GRU H=200, 2 windows 211 vs 565, 4 windows 559 vs 491. So: windows x hidden <= 512.
SMALL_WORK = 512


@jit
def _add_row_times(z, v, w):
    """z += v @ w for one row v: four rows of w per pass, so z is loaded and stored a
    quarter as often (1.3-1.5x the one-row loop at 128 x 512)."""
    rows, n = w.shape
    whole = rows - rows % 4
    for k in range(0, whole, 4):
        v0, v1, v2, v3 = v[k], v[k + 1], v[k + 2], v[k + 3]
        for j in range(n):
            z[j] += v0 * w[k, j] + v1 * w[k + 1, j] + v2 * w[k + 2, j] + v3 * w[k + 3, j]
    for k in range(whole, rows):
        for j in range(n):
            z[j] += v[k] * w[k, j]


@jit
def _lstm_sequence_small(xw, w_hh, h0, c0, h_t, c_t, gates_t):
    t, b, g4 = xw.shape
    hidden = g4 // 4
    z = np.empty(g4, xw.dtype)
    for i in range(b):
        for s in range(t):
            for j in range(g4):
                z[j] = xw[s, i, j]
            _add_row_times(z, h_t[s - 1, i] if s else h0[i], w_hh)
            for j in range(2 * hidden, 3 * hidden):  # tanh(v) = 2 sigmoid(2v) - 1
                z[j] *= _2
            _sigmoid_fwd(z, z)
            for j in range(hidden):
                ig, fg, og = z[j], z[hidden + j], z[3 * hidden + j]
                gg = _2 * z[2 * hidden + j] - _1
                c = fg * (c_t[s - 1, i, j] if s else c0[i, j]) + ig * gg
                c_t[s, i, j] = c
                h_t[s, i, j] = c
                gates_t[s, i, j], gates_t[s, i, hidden + j] = ig, fg
                gates_t[s, i, 2 * hidden + j], gates_t[s, i, 3 * hidden + j] = gg, og
            row = h_t[s, i]
            _tanh_fwd(row, row)
            for j in range(hidden):
                h_t[s, i, j] *= gates_t[s, i, 3 * hidden + j]


def lstm_forward(xw, w_hh, w_hr=None, h0=None, c0=None):
    xw_t = np.ascontiguousarray(xw)
    t, b, g4 = xw_t.shape
    hidden = g4 // 4
    zeros = np.zeros((b, hidden), xw.dtype)
    c_start = zeros if c0 is None else np.ascontiguousarray(c0, xw.dtype)
    if w_hr is None and b * hidden <= SMALL_WORK:
        h_t, c_t = np.empty((t, b, hidden), xw.dtype), np.empty((t, b, hidden), xw.dtype)
        gates_t = np.empty_like(xw_t)
        _lstm_sequence_small(xw_t, np.ascontiguousarray(w_hh, xw.dtype),
                             zeros if h0 is None else np.ascontiguousarray(h0, xw.dtype),
                             c_start, h_t, c_t, gates_t)
        return h_t, c_t, gates_t
    c_t = np.empty((t, b, hidden), xw.dtype)
    # without a projection h is written in place; with one, o * tanh(c) goes to a scratch
    h_t = np.empty((t, b, hidden if w_hr is None else w_hr.shape[1]), xw.dtype)
    unprojected = h_t if w_hr is None else np.empty((b, hidden), xw.dtype)
    gates_t = np.empty_like(xw_t)
    z = np.zeros((b, g4), xw.dtype)
    parts = _parts(b, g4)
    for s in range(t):
        if s or h0 is not None:
            gemm.matmul(h_t[s - 1] if s else h0, w_hh, out=z)
        c_prev = c_t[s - 1] if s else c_start
        _lstm_step_rows(parts, z, xw_t[s], c_prev, gates_t[s], c_t[s],
                        h_t[s] if w_hr is None else unprojected)
        if w_hr is not None:
            gemm.matmul(unprojected, w_hr, out=h_t[s])
    return h_t, c_t, gates_t


def lstm_backward(w_hh, h, c, gates, dh, w_hr=None, h0=None, c0=None, dcell=None):
    h_t, c_t, gates_t = h, c, gates
    dh_t = np.ascontiguousarray(dh, h.dtype)
    t, b, hidden = c_t.shape
    w_t = np.ascontiguousarray(w_hh.T)
    if w_hr is not None:  # o * tanh(c) before the gates are consumed, then dh through W_hr
        total = dh_t.copy()  # the output gradient plus the carry through W_hh, per step
    # each step's gates are read once, then that step's dz is written over them: the
    # backward needs no second (T, B, 4H) array (it consumes `gates`)
    dz_t = gates_t
    dh_carry = np.zeros((b, h.shape[2]), h.dtype)
    dc_carry = np.zeros((b, hidden), h.dtype)
    zeros, tanh_c = np.zeros((b, hidden), h.dtype), np.empty((b, hidden), h.dtype)
    c_start = zeros if c0 is None else np.ascontiguousarray(c0, h.dtype)
    if w_hr is not None:
        w_hr_t = np.ascontiguousarray(w_hr.T)
        unprojected = gates_t[:, :, 3 * hidden:] * np.tanh(c_t)
        dr = np.empty((b, hidden), h.dtype)
    parts = _parts(b, 4 * hidden)
    for s in range(t - 1, -1, -1):
        if dcell is not None:
            dc_carry += dcell[s]
        c_prev = c_t[s - 1] if s else c_start
        if w_hr is None:
            _lstm_step_back_rows(parts, gates_t[s], c_t[s], c_prev, dh_t[s], dh_carry, dc_carry,
                                 dz_t[s], tanh_c)
        else:
            total[s] += dh_carry
            gemm.matmul(total[s], w_hr_t, out=dr)
            _lstm_step_back_rows(parts, gates_t[s], c_t[s], c_prev, dr, zeros, dc_carry,
                                 dz_t[s], tanh_c)
        gemm.matmul(dz_t[s], w_t, out=dh_carry)
    dw_hh = gemm.matmul(_previous(h_t, h0).T, dz_t.reshape(-1, 4 * hidden))
    grads = (dz_t, dw_hh)
    if w_hr is not None:
        grads += (gemm.matmul(unprojected.reshape(-1, hidden).T,
                               total.reshape(-1, total.shape[2])),)
    return grads if h0 is None else (*grads, dh_carry, dc_carry)


@jit
def _gru_sequence_small(xw, w_hh, b_hh, h0, h_t, gates_t, hn_t):
    """GRU's counterpart of _lstm_sequence_small."""
    t, b, g3 = xw.shape
    hidden = g3 // 3
    hw = np.empty(g3, xw.dtype)
    rz = np.empty(2 * hidden, xw.dtype)
    n = np.empty(hidden, xw.dtype)
    for i in range(b):
        for s in range(t):
            for j in range(g3):
                hw[j] = b_hh[j]
            _add_row_times(hw, h_t[s - 1, i] if s else h0[i], w_hh)
            for j in range(2 * hidden):
                rz[j] = xw[s, i, j] + hw[j]
            _sigmoid_fwd(rz, rz)
            for j in range(hidden):
                n[j] = xw[s, i, 2 * hidden + j] + rz[j] * hw[2 * hidden + j]
            _tanh_fwd(n, n)
            for j in range(hidden):
                zg = rz[hidden + j]
                h_t[s, i, j] = (_1 - zg) * n[j] + zg * (h_t[s - 1, i, j] if s else h0[i, j])
                gates_t[s, i, j], gates_t[s, i, hidden + j] = rz[j], zg
                gates_t[s, i, 2 * hidden + j] = n[j]
                hn_t[s, i, j] = hw[2 * hidden + j]


def gru_forward(xw, w_hh, b_hh, h0=None):
    xw_t = np.ascontiguousarray(xw)
    t, b, g3 = xw_t.shape
    hidden = g3 // 3
    h_t = np.empty((t, b, hidden), xw.dtype)
    hn_t = np.empty_like(h_t)
    gates_t = np.empty_like(xw_t)
    start = np.zeros((b, hidden), xw.dtype) if h0 is None else np.ascontiguousarray(h0, xw.dtype)
    if b * hidden <= SMALL_WORK:
        _gru_sequence_small(xw_t, np.ascontiguousarray(w_hh, xw.dtype),
                            np.ascontiguousarray(b_hh, xw.dtype), start, h_t, gates_t, hn_t)
        return h_t, gates_t, hn_t
    hw = np.empty((b, g3), xw.dtype)
    rz = np.empty((b, 2 * hidden), xw.dtype)  # r and z, contiguous for one exp pass
    bias = np.ascontiguousarray(b_hh, xw.dtype)
    parts = _parts(b, g3)
    for s in range(t):
        if s or h0 is not None:
            gemm.matmul(h_t[s - 1] if s else start, w_hh, out=hw)
        else:
            hw[:] = 0
        _gru_step_rows(parts, hw, bias, xw_t[s], h_t[s - 1] if s else start, gates_t[s],
                       hn_t[s], h_t[s], rz)
    return h_t, gates_t, hn_t


def gru_backward(w_hh, h, gates, hn, dh, h0=None):
    h_t, gates_t, hn_t = h, gates, hn
    dh_t = np.ascontiguousarray(dh, h.dtype)
    t, b, hidden = h_t.shape
    w_t = np.ascontiguousarray(w_hh.T)
    dxw_t = np.empty_like(gates_t)
    dhw_t = np.empty_like(gates_t)
    carry = np.zeros((b, hidden), h.dtype)
    through_w = np.zeros((b, hidden), h.dtype)
    start = np.zeros((b, hidden), h.dtype) if h0 is None else h0
    parts = _parts(b, 3 * hidden)
    for s in range(t - 1, -1, -1):
        carry += through_w
        _gru_step_back_rows(parts, gates_t[s], hn_t[s], h_t[s - 1] if s else start, dh_t[s],
                            carry, dxw_t[s], dhw_t[s])
        gemm.matmul(dhw_t[s], w_t, out=through_w)
    flat = dhw_t.reshape(-1, 3 * hidden)
    grads = (dxw_t, gemm.matmul(_previous(h_t, h0).T, flat), flat.sum(axis=0))
    return grads if h0 is None else (*grads, carry + through_w)


KERNELS = {
    "rnn_forward": (rnn_forward, rnn_forward_reference),
    "rnn_backward": (rnn_backward, rnn_backward_reference),
    "lstm_forward": (lstm_forward, lstm_forward_reference),
    "lstm_backward": (lstm_backward, lstm_backward_reference),
    "gru_forward": (gru_forward, gru_forward_reference),
    "gru_backward": (gru_backward, gru_backward_reference),
}
