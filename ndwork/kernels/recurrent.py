"""Recurrent cells over a whole sequence, forward and backward through time: Elman RNN
(tanh or relu), LSTM and GRU, with PyTorch's gate order and equations.

Shapes: B = windows, T = time steps, H = hidden size, G = gates x H (RNN 1, GRU 3,
LSTM 4). The input projection of every step, xw = x @ W_ih + biases (B, T, G), is one
GEMM done by the caller (ops.recurrent); these kernels run the recurrence from a zero
state: each step's hidden-to-hidden product h @ W_hh (H, G) goes through BLAS, and the
gate arithmetic is fused around it.

What the forward keeps for the backward, and nothing more:
RNN: the hidden states h (B, T, H).
LSTM: h, the cell states c (B, T, H) and the gate activations (B, T, 4H) (i, f, g, o).
GRU: h, the gate activations (B, T, 3H) (r, z, n) and W_hn h + b_hn (B, T, H), which the
reset gate multiplies (so b_hh enters per step: it is passed here, not folded in xw).

Backward takes dh (B, T, H), the gradient of every output hidden state, and returns
dxw (B, T, G) (so the caller's GEMMs give dx, dW_ih and the input biases) and dW_hh
(plus db_hh for GRU).
"""

import numpy as np

from ndwork.kernels._jit import jit
from ndwork.kernels.activations import relu, relu_grad
from ndwork.kernels.fastmath import exp_into

CELLS = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


# --- numpy references ----------------------------------------------------------

def rnn_forward_reference(xw, w_hh, activation):
    b, t, hidden = xw.shape
    h = np.zeros((b, t, hidden), xw.dtype)
    prev = np.zeros((b, hidden), xw.dtype)
    for s in range(t):
        z = xw[:, s] + prev @ w_hh
        prev = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
        h[:, s] = prev
    return (h,)


def rnn_backward_reference(w_hh, h, dh, activation):
    b, t, hidden = h.shape
    dxw = np.empty_like(h)
    carry = np.zeros((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        g = dh[:, s] + carry
        dz = g * (1 - h[:, s] ** 2) if activation == "tanh" else g * (h[:, s] > 0)
        dxw[:, s] = dz
        carry = dz @ w_hh.T
    previous = np.concatenate([np.zeros((b, 1, hidden), h.dtype), h[:, :-1]], axis=1)
    dw_hh = previous.reshape(-1, hidden).T @ dxw.reshape(-1, hidden)
    return dxw, dw_hh


def lstm_forward_reference(xw, w_hh):
    b, t, g4 = xw.shape
    hidden = g4 // 4
    h = np.zeros((b, t, hidden), xw.dtype)
    c = np.zeros((b, t, hidden), xw.dtype)
    gates = np.empty((b, t, g4), xw.dtype)
    h_prev = np.zeros((b, hidden), xw.dtype)
    c_prev = np.zeros((b, hidden), xw.dtype)
    for s in range(t):
        z = xw[:, s] + h_prev @ w_hh
        i, f = _sigmoid(z[:, :hidden]), _sigmoid(z[:, hidden:2 * hidden])
        g, o = np.tanh(z[:, 2 * hidden:3 * hidden]), _sigmoid(z[:, 3 * hidden:])
        c_prev = f * c_prev + i * g
        h_prev = o * np.tanh(c_prev)
        gates[:, s] = np.concatenate([i, f, g, o], axis=1)
        h[:, s], c[:, s] = h_prev, c_prev
    return h, c, gates


def lstm_backward_reference(w_hh, h, c, gates, dh):
    b, t, hidden = h.shape
    dxw = np.empty_like(gates)
    dh_carry = np.zeros((b, hidden), h.dtype)
    dc_carry = np.zeros((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        i, f = gates[:, s, :hidden], gates[:, s, hidden:2 * hidden]
        g, o = gates[:, s, 2 * hidden:3 * hidden], gates[:, s, 3 * hidden:]
        tanh_c = np.tanh(c[:, s])
        c_prev = c[:, s - 1] if s else np.zeros_like(tanh_c)
        dh_s = dh[:, s] + dh_carry
        dc = dc_carry + dh_s * o * (1 - tanh_c**2)
        dz = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                             dc * i * (1 - g * g), dh_s * tanh_c * o * (1 - o)], axis=1)
        dxw[:, s] = dz
        dc_carry = dc * f
        dh_carry = dz @ w_hh.T
    previous = np.concatenate([np.zeros((b, 1, hidden), h.dtype), h[:, :-1]], axis=1)
    dw_hh = previous.reshape(-1, hidden).T @ dxw.reshape(-1, 4 * hidden)
    return dxw, dw_hh


def gru_forward_reference(xw, w_hh, b_hh):
    b, t, g3 = xw.shape
    hidden = g3 // 3
    h = np.zeros((b, t, hidden), xw.dtype)
    gates = np.empty((b, t, g3), xw.dtype)
    hn = np.empty((b, t, hidden), xw.dtype)
    prev = np.zeros((b, hidden), xw.dtype)
    for s in range(t):
        hw = prev @ w_hh + b_hh
        r = _sigmoid(xw[:, s, :hidden] + hw[:, :hidden])
        z = _sigmoid(xw[:, s, hidden:2 * hidden] + hw[:, hidden:2 * hidden])
        n = np.tanh(xw[:, s, 2 * hidden:] + r * hw[:, 2 * hidden:])
        prev = (1 - z) * n + z * prev
        gates[:, s] = np.concatenate([r, z, n], axis=1)
        hn[:, s], h[:, s] = hw[:, 2 * hidden:], prev
    return h, gates, hn


def gru_backward_reference(w_hh, h, gates, hn, dh):
    b, t, hidden = h.shape
    dxw = np.empty_like(gates)
    dhw = np.empty_like(gates)  # gradient of h_prev @ W_hh + b_hh
    carry = np.zeros((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        r, z, n = gates[:, s, :hidden], gates[:, s, hidden:2 * hidden], gates[:, s, 2 * hidden:]
        h_prev = h[:, s - 1] if s else np.zeros_like(r)
        dh_s = dh[:, s] + carry
        dn = dh_s * (1 - z) * (1 - n * n)
        dz = dh_s * (h_prev - n) * z * (1 - z)
        dr = dn * hn[:, s] * r * (1 - r)
        dxw[:, s] = np.concatenate([dr, dz, dn], axis=1)
        dhw[:, s] = np.concatenate([dr, dz, dn * r], axis=1)
        carry = dh_s * z + dhw[:, s] @ w_hh.T
    previous = np.concatenate([np.zeros((b, 1, hidden), h.dtype), h[:, :-1]], axis=1)
    dw_hh = previous.reshape(-1, hidden).T @ dhw.reshape(-1, 3 * hidden)
    return dxw, dw_hh, dhw.reshape(-1, 3 * hidden).sum(axis=0)


# --- numba kernels: the recurrence in one compiled call ----------------------------
# Each step: one BLAS product into `z`, then a fused pass over (B, G) in which the
# sigmoids and tanhs share one bulk exp_into call.

_1, _2 = np.float32(1), np.float32(2)


@jit
def _sigmoid_into(v, e):
    """v <- sigmoid(v), e scratch of v's size."""
    exp_into(v, e, -1.0)
    for k in range(v.size):
        v[k] = _1 / (_1 + e[k])


@jit
def _tanh_into(v, e):
    exp_into(v, e, 2.0)
    for k in range(v.size):
        v[k] = _1 - _2 / (e[k] + _1)


@jit
def _rnn_fwd(xw, w_hh, use_tanh, h):
    b, t, hidden = xw.shape
    prev = np.zeros((b, hidden), xw.dtype)
    e = np.empty(b * hidden, xw.dtype)
    for s in range(t):
        z = np.dot(prev, w_hh)
        z += xw[:, s]
        flat = z.reshape(-1)
        if use_tanh:
            _tanh_into(flat, e)
        else:
            for k in range(flat.size):
                flat[k] = relu(flat[k])
        h[:, s] = z
        prev = z


@jit
def _rnn_bwd(w_hh, h, dh, use_tanh, dxw):
    b, t, hidden = h.shape
    carry = np.zeros((b, hidden), h.dtype)
    w_t = np.ascontiguousarray(w_hh.T)
    dz = np.empty((b, hidden), h.dtype)
    for s in range(t - 1, -1, -1):
        for i in range(b):
            for j in range(hidden):
                g = dh[i, s, j] + carry[i, j]
                y = h[i, s, j]
                dz[i, j] = g * (_1 - y * y) if use_tanh else relu_grad(y, g)
        dxw[:, s] = dz
        carry = np.dot(dz, w_t)


@jit
def _lstm_fwd(xw, w_hh, h, c, gates):
    b, t, g4 = xw.shape
    hidden = g4 // 4
    h_prev = np.zeros((b, hidden), xw.dtype)
    c_prev = np.zeros((b, hidden), xw.dtype)
    e = np.empty(b * g4, xw.dtype)
    tc = np.empty((b, hidden), xw.dtype)
    e_h = np.empty(b * hidden, xw.dtype)
    for s in range(t):
        z = np.dot(h_prev, w_hh)
        z += xw[:, s]
        # i, f, o sigmoid and g tanh in one exp pass: tanh(v) = 2 sigmoid(2v) - 1
        for i in range(b):
            for j in range(2 * hidden, 3 * hidden):
                z[i, j] *= _2
        _sigmoid_into(z.reshape(-1), e)
        for i in range(b):
            for j in range(hidden):
                ig, fg = z[i, j], z[i, hidden + j]
                gg = _2 * z[i, 2 * hidden + j] - _1
                z[i, 2 * hidden + j] = gg
                c_prev[i, j] = fg * c_prev[i, j] + ig * gg
                tc[i, j] = c_prev[i, j]
        _tanh_into(tc.reshape(-1), e_h)
        for i in range(b):
            for j in range(hidden):
                h_prev[i, j] = z[i, 3 * hidden + j] * tc[i, j]
        h[:, s] = h_prev
        c[:, s] = c_prev
        gates[:, s] = z


@jit
def _lstm_bwd(w_hh, h, c, gates, dh, dxw):
    b, t, hidden = h.shape
    w_t = np.ascontiguousarray(w_hh.T)
    dh_carry = np.zeros((b, hidden), h.dtype)
    dc_carry = np.zeros((b, hidden), h.dtype)
    tc = np.empty((b, hidden), h.dtype)
    e = np.empty(b * hidden, h.dtype)
    dz = np.empty((b, 4 * hidden), h.dtype)
    zero = np.zeros(1, h.dtype)[0]
    for s in range(t - 1, -1, -1):
        tc[:] = c[:, s]
        _tanh_into(tc.reshape(-1), e)
        for i in range(b):
            for j in range(hidden):
                ig, fg = gates[i, s, j], gates[i, s, hidden + j]
                gg, og = gates[i, s, 2 * hidden + j], gates[i, s, 3 * hidden + j]
                c_prev = c[i, s - 1, j] if s else zero
                dh_s = dh[i, s, j] + dh_carry[i, j]
                dc = dc_carry[i, j] + dh_s * og * (_1 - tc[i, j] * tc[i, j])
                dz[i, j] = dc * gg * ig * (_1 - ig)
                dz[i, hidden + j] = dc * c_prev * fg * (_1 - fg)
                dz[i, 2 * hidden + j] = dc * ig * (_1 - gg * gg)
                dz[i, 3 * hidden + j] = dh_s * tc[i, j] * og * (_1 - og)
                dc_carry[i, j] = dc * fg
        dxw[:, s] = dz
        dh_carry = np.dot(dz, w_t)


@jit
def _gru_fwd(xw, w_hh, b_hh, h, gates, hn):
    b, t, g3 = xw.shape
    hidden = g3 // 3
    prev = np.zeros((b, hidden), xw.dtype)
    rz = np.empty((b, 2 * hidden), xw.dtype)
    n = np.empty((b, hidden), xw.dtype)
    e2 = np.empty(b * 2 * hidden, xw.dtype)
    e1 = np.empty(b * hidden, xw.dtype)
    for s in range(t):
        hw = np.dot(prev, w_hh)
        for i in range(b):
            for j in range(g3):
                hw[i, j] += b_hh[j]
            for j in range(2 * hidden):
                rz[i, j] = xw[i, s, j] + hw[i, j]
        _sigmoid_into(rz.reshape(-1), e2)
        for i in range(b):
            for j in range(hidden):
                n[i, j] = xw[i, s, 2 * hidden + j] + rz[i, j] * hw[i, 2 * hidden + j]
        _tanh_into(n.reshape(-1), e1)
        for i in range(b):
            for j in range(hidden):
                zg = rz[i, hidden + j]
                prev[i, j] = (_1 - zg) * n[i, j] + zg * prev[i, j]
                gates[i, s, j] = rz[i, j]
                gates[i, s, hidden + j] = zg
                gates[i, s, 2 * hidden + j] = n[i, j]
                hn[i, s, j] = hw[i, 2 * hidden + j]
        h[:, s] = prev


@jit
def _gru_bwd(w_hh, h, gates, hn, dh, dxw, dhw):
    b, t, hidden = h.shape
    w_t = np.ascontiguousarray(w_hh.T)
    carry = np.zeros((b, hidden), h.dtype)
    step = np.empty((b, 3 * hidden), h.dtype)
    zero = np.zeros(1, h.dtype)[0]
    for s in range(t - 1, -1, -1):
        for i in range(b):
            for j in range(hidden):
                r, zg, n = gates[i, s, j], gates[i, s, hidden + j], gates[i, s, 2 * hidden + j]
                h_prev = h[i, s - 1, j] if s else zero
                dh_s = dh[i, s, j] + carry[i, j]
                dn = dh_s * (_1 - zg) * (_1 - n * n)
                dz = dh_s * (h_prev - n) * zg * (_1 - zg)
                dr = dn * hn[i, s, j] * r * (_1 - r)
                dxw[i, s, j], dxw[i, s, hidden + j], dxw[i, s, 2 * hidden + j] = dr, dz, dn
                step[i, j], step[i, hidden + j], step[i, 2 * hidden + j] = dr, dz, dn * r
                carry[i, j] = dh_s * zg
        dhw[:, s] = step
        carry += np.dot(step, w_t)


# --- public wrappers: same signatures as the references ---------------------------

def rnn_forward(xw, w_hh, activation):
    xw = np.ascontiguousarray(xw)
    h = np.empty_like(xw)
    _rnn_fwd(xw, np.ascontiguousarray(w_hh), activation == "tanh", h)
    return (h,)


def rnn_backward(w_hh, h, dh, activation):
    b, t, hidden = h.shape
    dxw = np.empty_like(h)
    _rnn_bwd(np.ascontiguousarray(w_hh), h, np.ascontiguousarray(dh, h.dtype),
             activation == "tanh", dxw)
    return dxw, _previous(h).T @ dxw.reshape(-1, hidden)


def lstm_forward(xw, w_hh):
    xw = np.ascontiguousarray(xw)
    b, t, g4 = xw.shape
    h = np.empty((b, t, g4 // 4), xw.dtype)
    c = np.empty_like(h)
    gates = np.empty_like(xw)
    _lstm_fwd(xw, np.ascontiguousarray(w_hh), h, c, gates)
    return h, c, gates


def lstm_backward(w_hh, h, c, gates, dh):
    dxw = np.empty_like(gates)
    _lstm_bwd(np.ascontiguousarray(w_hh), h, c, gates, np.ascontiguousarray(dh, h.dtype), dxw)
    return dxw, _previous(h).T @ dxw.reshape(-1, gates.shape[2])


def gru_forward(xw, w_hh, b_hh):
    xw = np.ascontiguousarray(xw)
    b, t, g3 = xw.shape
    h = np.empty((b, t, g3 // 3), xw.dtype)
    gates = np.empty_like(xw)
    hn = np.empty_like(h)
    _gru_fwd(xw, np.ascontiguousarray(w_hh), np.ascontiguousarray(b_hh, xw.dtype), h, gates, hn)
    return h, gates, hn


def gru_backward(w_hh, h, gates, hn, dh):
    dxw = np.empty_like(gates)
    dhw = np.empty_like(gates)
    _gru_bwd(np.ascontiguousarray(w_hh), h, gates, hn, np.ascontiguousarray(dh, h.dtype), dxw,
             dhw)
    flat = dhw.reshape(-1, gates.shape[2])
    return dxw, _previous(h).T @ flat, flat.sum(axis=0)


def _previous(h):
    """(B * T, H): the hidden state each step started from (zeros at the first)."""
    b, t, hidden = h.shape
    previous = np.zeros_like(h)
    previous[:, 1:] = h[:, :-1]
    return previous.reshape(-1, hidden)


KERNELS = {
    "rnn_forward": (rnn_forward, rnn_forward_reference),
    "rnn_backward": (rnn_backward, rnn_backward_reference),
    "lstm_forward": (lstm_forward, lstm_forward_reference),
    "lstm_backward": (lstm_backward, lstm_backward_reference),
    "gru_forward": (gru_forward, gru_forward_reference),
    "gru_backward": (gru_backward, gru_backward_reference),
}
