"""The two cells of xLSTM (Beck et al., 2024), as the `xlstm` package behind NeuralForecast's
xLSTM computes them, forward and backward.

sLSTM: a recurrent cell with exponential input and forget gates, a normalizer state n and
a stabilizer m, its hidden-to-hidden weights block-diagonal over heads. Per step and unit:
    i, f, z, o = xw_t + y_{t-1} R + b
    m_t = i at the first step, else max(i, m_{t-1} + log sigmoid(f))
    i' = exp(i - m_t),  f' = exp(log sigmoid(f) + m_{t-1} - m_t)  (0 at the first step)
    c_t = f' c_{t-1} + i' tanh(z),  n_t = f' n_{t-1} + i',  y_t = sigmoid(o) c_t / n_t
m only keeps exp() in range: c_t and n_t both carry the factor exp(-m_t), so y does not
depend on m at all, and the backward treats m as a constant (exactly, not approximately).
Shapes, time-major like ndwork.kernels.recurrent: xw (T, B, 4H), gate-major (i, f, z, o),
each gate's H units head after head; R (NH, dh, 4 dh), head h's block, column g * dh + j
feeding gate g's unit j of that head; b (4H,). The forward keeps y, c, n (T, B, H) and
the gate values (T, B, 5H): i', f', tanh z, sigmoid o, sigmoid f.

mLSTM, in the package's parallel form (parallel_stabilized_simple), per window and head,
over S steps with q, k, v (S, d) and gate pre-activations i, f (S,):
    log D[t, s] = sum_{u = s+1..t} log sigmoid(f_u) + i_s  (s <= t; D = 0 above the diagonal)
    m_t = max_s log D[t, s],  C = (q kᵀ / sqrt(d)) * exp(log D - m)
    n_t = max(|sum_s C[t, s]|, exp(-m_t)),  h = C / (n + 1e-6) @ v
Shapes (B, S, NH, d) and (B, S, NH): the layout the projections produce, so that no
transpose is needed on either side. The forward keeps nothing but its inputs: the
backward recomputes the S x S matrices row by row (S is the input window, small). m's gradient goes to the
argmax, as autograd's max does.
"""

import math

import numpy as np

from ndwork.kernels._jit import jit
from ndwork.kernels.activations import _sigmoid_fwd, _tanh_fwd
from ndwork.kernels.fastmath import exp_into

EPS = 1e-6  # the package's, in the mLSTM normalizer


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _log_sigmoid(v):
    return -np.logaddexp(0, -v)


def _head_product(y, r):
    """y (B, H) times block-diagonal R (NH, dh, 4dh) -> (B, 4H), gate-major."""
    b = y.shape[0]
    heads, dh, g = r.shape
    out = np.einsum("bhk,hkq->bhq", y.reshape(b, heads, dh), r)
    return out.reshape(b, heads, g // dh, dh).transpose(0, 2, 1, 3).reshape(b, -1)


def _head_major(draw, heads):
    """(N, 4H) gate-major -> (NH, N, 4dh): each head's gates side by side."""
    n, g4 = draw.shape
    return np.ascontiguousarray(
        draw.reshape(n, 4, heads, g4 // 4 // heads).transpose(2, 0, 1, 3).reshape(heads, n, -1))


def _recurrent_weight_grad(y, draw, heads):
    """dR = sum over steps and windows of y_{t-1}ᵀ draw_t, head by head."""
    t, b, hidden = y.shape
    prev = np.zeros_like(y)
    prev[1:] = y[:-1]
    prev_h = prev.reshape(t * b, heads, hidden // heads).transpose(1, 2, 0)  # (NH, dh, TB)
    return prev_h @ _head_major(draw.reshape(t * b, -1), heads)


# --- numpy references ----------------------------------------------------------

def slstm_forward_reference(xw, r, b):
    t, batch, g4 = xw.shape
    hidden = g4 // 4
    y, c, n = (np.zeros((t, batch, hidden), xw.dtype) for _ in range(3))
    gates = np.empty((t, batch, 5 * hidden), xw.dtype)
    y_prev, c_prev, n_prev, m_prev = (np.zeros((batch, hidden), xw.dtype) for _ in range(4))
    for s in range(t):
        i, f, z, o = np.split(xw[s] + b + _head_product(y_prev, r), 4, axis=1)
        log_f = _log_sigmoid(f)
        m = i if s == 0 else np.maximum(i, m_prev + log_f)
        ig = np.exp(i - m)
        fg = np.exp(log_f + m_prev - m) if s else np.zeros_like(i)
        zt, og = np.tanh(z), _sigmoid(o)
        c_prev = fg * c_prev + ig * zt
        n_prev = fg * n_prev + ig
        y_prev, m_prev = og * c_prev / n_prev, m
        gates[s] = np.concatenate([ig, fg, zt, og, _sigmoid(f)], axis=1)
        y[s], c[s], n[s] = y_prev, c_prev, n_prev
    return y, c, n, gates


def slstm_backward_reference(r, y, c, n, gates, dy):
    """Returns dxw (T, B, 4H), dR, db."""
    t, batch, hidden = y.shape
    heads = r.shape[0]
    dxw = np.empty((t, batch, 4 * hidden), y.dtype)
    dy_carry, dc_carry, dn_carry = (np.zeros((batch, hidden), y.dtype) for _ in range(3))
    zeros = np.zeros((batch, hidden), y.dtype)
    r_t = np.swapaxes(r, 1, 2)
    for s in range(t - 1, -1, -1):
        ig, fg, zt, og, sf = np.split(gates[s], 5, axis=1)
        c_prev, n_prev = (c[s - 1], n[s - 1]) if s else (zeros, zeros)
        d_y = dy[s] + dy_carry
        dc = dc_carry + d_y * og / n[s]
        dn = dn_carry - d_y * og * c[s] / n[s] ** 2
        draw = np.concatenate([(dc * zt + dn) * ig,
                               (dc * c_prev + dn * n_prev) * fg * (1 - sf),
                               dc * ig * (1 - zt * zt),
                               d_y * c[s] / n[s] * og * (1 - og)], axis=1)
        dxw[s] = draw
        dc_carry, dn_carry = dc * fg, dn * fg
        dy_carry = (_head_major(draw, heads) @ r_t).transpose(1, 0, 2).reshape(batch, hidden)
    return dxw, _recurrent_weight_grad(y, dxw, heads), dxw.sum(axis=(0, 1))


def _decay(ig, fg):
    """log D (B, NH, S, S), -inf above the diagonal, and its row maxima m (B, NH, S)."""
    s = ig.shape[-1]
    cs = np.cumsum(_log_sigmoid(fg), axis=-1)
    log_d = cs[..., :, None] - cs[..., None, :] + ig[..., None, :]
    log_d = np.where(np.tril(np.ones((s, s), bool)), log_d, -np.inf)
    return log_d, log_d.max(axis=-1)


def _heads_first(*arrays):
    """(B, S, NH, ...) -> (B, NH, S, ...)."""
    return [np.swapaxes(a, 1, 2) for a in arrays]


def mlstm_forward_reference(q, k, v, ig, fg):
    """Returns h (B, S, NH, d)."""
    q, k, v, ig, fg = _heads_first(q, k, v, ig, fg)
    return np.swapaxes(_mlstm_heads_first(q, k, v, ig, fg), 1, 2)


def _mlstm_heads_first(q, k, v, ig, fg):
    log_d, m = _decay(ig, fg)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) * np.exp(log_d - m[..., None])
    norm = np.maximum(np.abs(scores.sum(axis=-1)), np.exp(-m))
    return (scores / (norm + EPS)[..., None]) @ v


def mlstm_backward_reference(q, k, v, ig, fg, dh):
    """Returns dq, dk, dv, dig, dfg."""
    grads = _mlstm_backward_heads_first(*_heads_first(q, k, v, ig, fg, dh))
    return tuple(np.swapaxes(g, 1, 2) for g in grads)


def _mlstm_backward_heads_first(q, k, v, ig, fg, dh):
    root_d = np.sqrt(q.shape[-1])
    log_d, m = _decay(ig, fg)
    decay = np.exp(log_d - m[..., None])
    qk = q @ np.swapaxes(k, -1, -2) / root_d
    scores = qk * decay
    norm = np.maximum(np.abs(scores.sum(axis=-1)), np.exp(-m))
    denom = (norm + EPS)[..., None]
    dv = np.zeros_like(v)
    for t in range(q.shape[-2]):  # causal entries only: dh[t] reaches v[: t + 1] alone
        dv[..., : t + 1, :] += (scores[..., t, : t + 1] / denom[..., t, :])[..., None] \
            * dh[..., t, None, :]
    dscaled = dh @ np.swapaxes(v, -1, -2)
    dnorm = -(dscaled * scores).sum(axis=-1) / denom[..., 0] ** 2
    row_sum = scores.sum(axis=-1)
    by_sum = np.abs(row_sum) >= np.exp(-m)  # which side of the max n took
    dscores = dscaled / denom + (dnorm * np.sign(row_sum) * by_sum)[..., None]
    dscores = np.where(np.isfinite(log_d), dscores, 0)  # above the diagonal D is 0: no path
    dm = np.where(by_sum, 0, -dnorm * np.exp(-m))
    dqk = dscores * decay
    dlog = dscores * qk * decay
    dm -= dlog.sum(axis=-1)
    arg = log_d.argmax(axis=-1)[..., None]
    np.put_along_axis(dlog, arg, np.take_along_axis(dlog, arg, -1) + dm[..., None], -1)
    dq = dqk @ k / root_d
    dk = np.swapaxes(dqk, -1, -2) @ q / root_d
    dcs = dlog.sum(axis=-1) - dlog.sum(axis=-2)
    dlog_f = np.flip(np.cumsum(np.flip(dcs, -1), axis=-1), -1)
    return dq, dk, dv, dlog.sum(axis=-2), dlog_f * _sigmoid(-fg)


# --- compiled path ---------------------------------------------------------------
# sLSTM: each step's head-batched product y_{t-1} R goes through numpy's BLAS, the gate
# arithmetic is one fused numba kernel. mLSTM: one numba kernel over windows x heads, row
# by row of the S x S matrices, which are never stored. It is serial: inside a training
# step, between BLAS calls whose threads still spin, a parallel launch measured no faster
# and slowed the step around it.

_1 = np.float32(1)


@jit
def _slstm_step(xw_s, ry, b, first, c_prev, n_prev, m, gates_s, y_s, c_s, n_s, pre, scratch):
    """ry (NH, B, 4dh): y_{t-1} R per head. Updates m (B, H) in place. The gates are
    gathered gate-major into pre (4, B, H) so that their exps run in bulk (exp_into, which
    vectorizes; numba's math.exp does not); one scalar log per unit remains, for m."""
    batch, g4 = xw_s.shape
    hidden = g4 // 4
    heads = ry.shape[0]
    dh = hidden // heads
    for g in range(4):
        for i in range(batch):
            for h in range(heads):
                for j in range(dh):
                    u = h * dh + j
                    pre[g, i, u] = xw_s[i, g * hidden + u] + b[g * hidden + u] + ry[h, i, g * dh + j]
    sf, i_shift, m_shift = scratch[0], scratch[1], scratch[2]
    _sigmoid_fwd(pre[1].reshape(-1), sf.reshape(-1))
    for i in range(batch):
        for u in range(hidden):
            pre_i = pre[0, i, u]
            m_new = pre_i if first else max(pre_i, m[i, u] + math.log(sf[i, u]))
            i_shift[i, u] = pre_i - m_new
            m_shift[i, u] = m[i, u] - m_new
            m[i, u] = m_new
    exp_into(i_shift.reshape(-1), i_shift.reshape(-1))
    exp_into(m_shift.reshape(-1), m_shift.reshape(-1))
    _tanh_fwd(pre[2].reshape(-1), pre[2].reshape(-1))
    _sigmoid_fwd(pre[3].reshape(-1), pre[3].reshape(-1))
    for i in range(batch):
        for u in range(hidden):
            ig, zt, og = i_shift[i, u], pre[2, i, u], pre[3, i, u]
            fg = sf[i, u] * m_shift[i, u] if not first else 0.0  # no previous state
            c = fg * c_prev[i, u] + ig * zt
            nn = fg * n_prev[i, u] + ig
            c_s[i, u], n_s[i, u], y_s[i, u] = c, nn, og * c / nn
            gates_s[i, u], gates_s[i, hidden + u] = ig, fg
            gates_s[i, 2 * hidden + u], gates_s[i, 3 * hidden + u] = zt, og
            gates_s[i, 4 * hidden + u] = sf[i, u]


@jit
def _slstm_step_back(gates_s, c_s, n_s, c_prev, n_prev, dy_s, dy_carry, dc_carry, dn_carry,
                     draw_s, draw_h):
    """draw (B, 4H) of one step, and its head-major copy draw_h (NH, B, 4dh) for the
    product with Rᵀ; the carries dc, dn are updated in place (dy_carry is read)."""
    batch, hidden = c_s.shape
    heads = draw_h.shape[0]
    dh = hidden // heads
    for i in range(batch):
        for u in range(hidden):
            h, j = u // dh, u % dh
            ig, fg = gates_s[i, u], gates_s[i, hidden + u]
            zt, og = gates_s[i, 2 * hidden + u], gates_s[i, 3 * hidden + u]
            sf = gates_s[i, 4 * hidden + u]
            c, nn = c_s[i, u], n_s[i, u]
            d_y = dy_s[i, u] + dy_carry[h, i, j]
            dc = dc_carry[i, u] + d_y * og / nn
            dn = dn_carry[i, u] - d_y * og * c / (nn * nn)
            d_i = (dc * zt + dn) * ig
            d_f = (dc * c_prev[i, u] + dn * n_prev[i, u]) * fg * (_1 - sf)
            d_z = dc * ig * (_1 - zt * zt)
            d_o = d_y * c / nn * og * (_1 - og)
            draw_s[i, u], draw_s[i, hidden + u] = d_i, d_f
            draw_s[i, 2 * hidden + u], draw_s[i, 3 * hidden + u] = d_z, d_o
            draw_h[h, i, j], draw_h[h, i, dh + j] = d_i, d_f
            draw_h[h, i, 2 * dh + j], draw_h[h, i, 3 * dh + j] = d_z, d_o
            dc_carry[i, u], dn_carry[i, u] = dc * fg, dn * fg


def slstm_forward(xw, r, b):
    xw_t = np.ascontiguousarray(xw)
    t, batch, g4 = xw_t.shape
    hidden, heads = g4 // 4, r.shape[0]
    y, c, n = (np.empty((t, batch, hidden), xw.dtype) for _ in range(3))
    gates = np.empty((t, batch, 5 * hidden), xw.dtype)
    m = np.zeros((batch, hidden), xw.dtype)
    zeros = np.zeros((batch, hidden), xw.dtype)
    ry = np.zeros((heads, batch, g4 // heads), xw.dtype)
    bias = np.ascontiguousarray(b, xw.dtype)
    pre, scratch = np.empty((4, batch, hidden), xw.dtype), np.empty((3, batch, hidden), xw.dtype)
    for s in range(t):
        if s:
            np.matmul(y[s - 1].reshape(batch, heads, -1).transpose(1, 0, 2), r, out=ry)
        _slstm_step(xw_t[s], ry, bias, s == 0, c[s - 1] if s else zeros,
                    n[s - 1] if s else zeros, m, gates[s], y[s], c[s], n[s], pre, scratch)
    return y, c, n, gates


def slstm_backward(r, y, c, n, gates, dy):
    dy_t = np.ascontiguousarray(dy, y.dtype)
    t, batch, hidden = y.shape
    heads = r.shape[0]
    r_t = np.ascontiguousarray(np.swapaxes(r, 1, 2))
    dxw = np.empty((t, batch, 4 * hidden), y.dtype)
    draw_h = np.empty((heads, batch, 4 * hidden // heads), y.dtype)
    dy_carry = np.zeros((heads, batch, hidden // heads), y.dtype)
    dc_carry, dn_carry, zeros = (np.zeros((batch, hidden), y.dtype) for _ in range(3))
    for s in range(t - 1, -1, -1):
        _slstm_step_back(gates[s], c[s], n[s], c[s - 1] if s else zeros,
                         n[s - 1] if s else zeros, dy_t[s], dy_carry, dc_carry, dn_carry,
                         dxw[s], draw_h)
        np.matmul(draw_h, r_t, out=dy_carry)
    return dxw, _recurrent_weight_grad(y, dxw, heads), dxw.sum(axis=(0, 1))


@jit
def _log_sigmoid_scalar(v):
    return -math.log1p(math.exp(-v)) if v > -20 else v


@jit
def _decay_row(cs, ig_row, t, row):
    """log D[t, :t+1] into row; returns its maximum and first argmax."""
    best, arg = cs[t] - cs[0] + ig_row[0], 0
    for s in range(t + 1):
        row[s] = cs[t] - cs[s] + ig_row[s]
        if row[s] > best:
            best, arg = row[s], s
    return best, arg


@jit
def _cumulative_log_forget(fg_row, cs):
    acc = 0.0
    for t in range(fg_row.size):
        acc += _log_sigmoid_scalar(fg_row[t])
        cs[t] = acc


@jit
def _mlstm_forward(q, k, v, ig, fg, out):
    batch, s_len, heads, d = q.shape
    scale = 1 / math.sqrt(d)
    for task in range(batch * heads):
        b, h = task // heads, task % heads
        cs, row = np.empty(s_len), np.empty(s_len)
        _cumulative_log_forget(fg[b, :, h], cs)
        for t in range(s_len):
            m, _ = _decay_row(cs, ig[b, :, h], t, row)
            total = 0.0
            for s in range(t + 1):
                dot = 0.0
                for j in range(d):
                    dot += q[b, t, h, j] * k[b, s, h, j]
                row[s] = dot * scale * math.exp(row[s] - m)
                total += row[s]
            inv = 1 / (max(abs(total), math.exp(-m)) + EPS)
            for j in range(d):
                out[b, t, h, j] = 0
            for s in range(t + 1):
                w = row[s] * inv
                for j in range(d):
                    out[b, t, h, j] += w * v[b, s, h, j]


@jit
def _mlstm_backward(q, k, v, ig, fg, dh, dq, dk, dv, dig, dfg):
    batch, s_len, heads, d = q.shape
    scale = 1 / math.sqrt(d)
    for task in range(batch * heads):
        b, h = task // heads, task % heads
        cs, log_row, qk = np.empty(s_len), np.empty(s_len), np.empty(s_len)
        decay, dscaled, dcs = np.empty(s_len), np.empty(s_len), np.zeros(s_len)
        _cumulative_log_forget(fg[b, :, h], cs)
        dq[b, :, h], dk[b, :, h], dv[b, :, h], dig[b, :, h] = 0, 0, 0, 0
        for t in range(s_len):
            m, arg = _decay_row(cs, ig[b, :, h], t, log_row)
            row_sum, dot_scores = 0.0, 0.0
            for s in range(t + 1):
                dot, dot_v = 0.0, 0.0
                for j in range(d):
                    dot += q[b, t, h, j] * k[b, s, h, j]
                    dot_v += dh[b, t, h, j] * v[b, s, h, j]
                decay[s] = math.exp(log_row[s] - m)
                qk[s] = dot * scale
                dscaled[s] = dot_v
                row_sum += qk[s] * decay[s]
                dot_scores += dot_v * qk[s] * decay[s]
            floor = math.exp(-m)
            denom = max(abs(row_sum), floor) + EPS
            dnorm = -dot_scores / (denom * denom)
            by_sum = abs(row_sum) >= floor
            extra = dnorm * np.sign(row_sum) if by_sum else 0.0
            dm = 0.0 if by_sum else -dnorm * floor
            for s in range(t + 1):
                dscore = dscaled[s] / denom + extra
                dqk = dscore * decay[s]
                dlog = dscore * qk[s] * decay[s]
                w = qk[s] * decay[s] / denom
                for j in range(d):
                    dv[b, s, h, j] += w * dh[b, t, h, j]
                    dq[b, t, h, j] += dqk * k[b, s, h, j] * scale
                    dk[b, s, h, j] += dqk * q[b, t, h, j] * scale
                dm -= dlog
                log_row[s] = dlog
            log_row[arg] += dm
            for s in range(t + 1):
                dig[b, s, h] += log_row[s]
                dcs[t] += log_row[s]
                dcs[s] -= log_row[s]
        acc = 0.0
        for t in range(s_len - 1, -1, -1):
            acc += dcs[t]
            dfg[b, t, h] = acc / (1 + math.exp(fg[b, t, h]))  # d log sigmoid(f) = sigmoid(-f)


def mlstm_forward(q, k, v, ig, fg):
    q, k, v, ig, fg = (np.ascontiguousarray(a) for a in (q, k, v, ig, fg))
    out = np.empty_like(q)
    _mlstm_forward(q, k, v, ig, fg, out)
    return out


def mlstm_backward(q, k, v, ig, fg, dh):
    q, k, v, ig, fg = (np.ascontiguousarray(a) for a in (q, k, v, ig, fg))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dig, dfg = np.empty_like(ig), np.empty_like(fg)
    _mlstm_backward(q, k, v, ig, fg, np.ascontiguousarray(dh, q.dtype), dq, dk, dv, dig, dfg)
    return dq, dk, dv, dig, dfg


KERNELS = {
    "slstm_forward": (slstm_forward, slstm_forward_reference),
    "slstm_backward": (slstm_backward, slstm_backward_reference),
    "mlstm_forward": (mlstm_forward, mlstm_forward_reference),
    "mlstm_backward": (mlstm_backward, mlstm_backward_reference),
}
