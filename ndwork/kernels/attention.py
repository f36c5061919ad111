"""Scaled dot-product attention: flash (tiled, O(N·d) memory) beside the naive reference.

Shapes: q (B, H, Nq, d), k and v (B, H, Nk, d), out (B, H, Nq, d), lse (B, H, Nq).
`causal` aligns top-left: query i sees keys 0..i. `key_padding_mask` (B, Nk) bool, True
means that key is ignored (torch's key_padding_mask). A query row that sees no key has
output 0 and log-sum-exp -inf, and passes no gradient.

The forward keeps only the output and the per-row log-sum-exp; the backward recomputes
the scores block by block from them (FlashAttention-2), so nothing of size Nq x Nk is
ever allocated by the flash path.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ndwork.config import kernel_blas_single_threaded
from ndwork.kernels._jit import jit
from ndwork.kernels.fastmath import exp_into, exp_parts

# Defaults from the block sweep of `python -m ndwork.bench attention` (N=2048, d=64, 2 cores):
# 256 x 256 tiles were fastest (89 ms forward+backward against 98 ms for 128 x 128).
BLOCK_Q = 256
BLOCK_K = 256


def _check(q, k, v, key_padding_mask, block_q=BLOCK_Q, block_k=BLOCK_K, extra=()):
    arrays = {"q": q, "k": k, "v": v, **dict(extra)}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}.")
        if a.ndim != 4:
            raise ValueError(f"{name} must have shape (batch, heads, N, d), got {a.shape}.")
    if k.shape != v.shape:
        raise ValueError(f"k {k.shape} and v {v.shape} must have the same shape.")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {q.shape} and k {k.shape} must share batch, heads and head size d.")
    if key_padding_mask is not None:
        mask = np.asarray(key_padding_mask)
        if mask.dtype != np.bool_ or mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(f"key_padding_mask must be bool of shape (batch, N_k) = "
                             f"{(k.shape[0], k.shape[2])}, got {mask.dtype} {mask.shape}.")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int | np.integer) or size <= 0:
            raise ValueError(f"{name} must be a positive integer, got {size!r}.")


def _visible(nq, nk, causal, key_padding_mask, batch):
    """(B, 1, Nq, Nk) bool: which keys each query sees (reference only)."""
    visible = np.ones((batch, 1, nq, nk), dtype=bool)
    if causal:
        visible &= np.tril(np.ones((nq, nk), dtype=bool))
    if key_padding_mask is not None:
        visible &= ~np.asarray(key_padding_mask)[:, None, None, :]
    return visible


# --- numpy reference: materialized scores ---------------------------------------------

def naive_attention_forward(q, k, v, causal=False, key_padding_mask=None,
                            block_q=BLOCK_Q, block_k=BLOCK_K):
    """softmax(q kᵀ / sqrt(d)) v with the whole (Nq, Nk) score matrix; block sizes unused."""
    _check(q, k, v, key_padding_mask, block_q, block_k)
    scale = 1 / math.sqrt(q.shape[-1])
    visible = _visible(q.shape[2], k.shape[2], causal, key_padding_mask, q.shape[0])
    scores = np.where(visible, (q @ k.swapaxes(-1, -2)) * scale, -np.inf)
    peak = scores.max(axis=-1, keepdims=True)
    safe_peak = np.where(np.isfinite(peak), peak, 0)
    p = np.exp(scores - safe_peak)
    total = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + safe_peak)[..., 0]
    out = (p / np.where(total > 0, total, 1)) @ v
    return out.astype(q.dtype), lse.astype(q.dtype)


def naive_attention_backward(q, k, v, out, lse, dout, causal=False, key_padding_mask=None):
    _check(q, k, v, key_padding_mask, extra={"out": out, "dout": dout})
    scale = 1 / math.sqrt(q.shape[-1])
    visible = _visible(q.shape[2], k.shape[2], causal, key_padding_mask, q.shape[0])
    finite = np.isfinite(lse)[..., None]
    scores = (q @ k.swapaxes(-1, -2)) * scale
    p = np.where(visible & finite, np.exp(scores - np.where(finite, lse[..., None], 0)), 0)
    dv = p.swapaxes(-1, -2) @ dout
    dp = dout @ v.swapaxes(-1, -2)
    ds = p * (dp - (dout * out).sum(axis=-1, keepdims=True))
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)


# --- flash: numba, tiled, online softmax ------------------------------------------------

@jit
def _mask_block(s, i0, j0, causal, pad, use_pad):
    """Set invisible scores of the block s (rows i0.., columns j0..) to -inf."""
    rows, cols = s.shape
    for i in range(rows):
        if causal:  # a slice, not a test per score (a masked store: slow on AMD)
            s[i, max(0, i0 + i + 1 - j0):] = -np.inf
        if use_pad:
            for j in range(cols):
                if pad[j0 + j]:
                    s[i, j] = -np.inf


@jit
def _mask_transposed(st, i0, j0, causal, pad, use_pad):
    """Set invisible scores of the transposed block st (keys j0.., queries i0..) to -inf:
    a padded key's whole row, and with causal, each key's prefix of earlier queries."""
    keys, rows = st.shape
    for j in range(keys):
        if use_pad and pad[j0 + j]:
            st[j, :] = -np.inf
        elif causal:
            st[j, :max(0, min(rows, j0 + j - i0))] = -np.inf


@jit
def _online_softmax_block(st, m, ell, acc, mantissas, powers):
    """One key block of the online softmax, with the scores transposed: st (keys, rows)
    so that every pass runs along a key's row of queries, elementwise and vectorized
    (a per-query max along keys would be a serial reduction).

    Updates the running max m and sum ell of each query row, rescales acc, and leaves
    st = exp(scores - m). Invisible scores are -inf and become 0; a row with nothing
    visible yet keeps m = -inf and shifts by 0."""
    keys, rows = st.shape
    new_m = m.copy()
    for j in range(keys):
        row = st[j]
        for i in range(rows):  # not `v if v > m else m`: LLVM makes that a masked store,
            new_m[i] = np.maximum(new_m[i], row[i])  # microcoded on AMD (7x slower here)
    shift = np.where(new_m == -np.inf, 0, new_m).astype(st.dtype)
    for i in range(rows):
        correction = math.exp(m[i] - shift[i])  # 0 when m[i] = -inf
        ell[i] *= correction
        acc[i] *= correction
        m[i] = new_m[i]
    if st.itemsize != 4:  # float64 (gradient checks): the library exp
        for j in range(keys):
            for i in range(rows):
                st[j, i] = math.exp(st[j, i] - shift[i])
                ell[i] += st[j, i]
        return
    mantissa_bits = mantissas.view(np.int32)
    for j in range(keys):  # one key's row at a time, in L1: exp's two passes, then the sum
        row, bits = st[j], st[j].view(np.int32)
        for i in range(rows):
            mantissas[i], powers[i] = exp_parts(row[i] - shift[i])
        for i in range(rows):
            bits[i] = mantissa_bits[i] + (powers[i] << 23)
        for i in range(rows):
            ell[i] += row[i]


@nb.njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
def _flash_forward(q, k, v, causal, pad, use_pad, block_q, block_k, out, lse):
    """Parallel over (batch, head, query block); per key block the transposed scores by
    BLAS, the online softmax, and the values' product by BLAS."""
    batch, heads, nq, d = q.shape
    nk = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    n_qblocks = (nq + block_q - 1) // block_q
    for task in nb.prange(batch * heads * n_qblocks):
        b = task // (heads * n_qblocks)
        h = (task // n_qblocks) % heads
        i0 = (task % n_qblocks) * block_q
        i1 = min(nq, i0 + block_q)
        rows = i1 - i0
        qb = q[b, h, i0:i1] * q.dtype.type(scale)
        m = np.full(rows, -np.inf, dtype=q.dtype)
        ell = np.zeros(rows, dtype=q.dtype)
        acc = np.zeros((rows, d), dtype=q.dtype)
        mantissas = np.empty(rows, dtype=np.float32)
        powers = np.empty(rows, dtype=np.int32)
        j_end = min(nk, i1) if causal else nk
        for j0 in range(0, j_end, block_k):
            j1 = min(j_end, j0 + block_k)
            st = np.dot(k[b, h, j0:j1], qb.T)
            if (causal and j1 - 1 > i0) or use_pad:
                _mask_transposed(st, i0, j0, causal, pad[b], use_pad)
            _online_softmax_block(st, m, ell, acc, mantissas, powers)
            acc += np.dot(st.T, v[b, h, j0:j1])
        for i in range(rows):
            if ell[i] > 0 or ell[i] != ell[i]:  # a NaN score makes the row NaN
                inv = 1.0 / ell[i]
                for c in range(d):
                    out[b, h, i0 + i, c] = acc[i, c] * inv
                lse[b, h, i0 + i] = m[i] + math.log(ell[i])
            else:
                out[b, h, i0 + i, :] = 0
                lse[b, h, i0 + i] = -np.inf


@nb.njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
def _flash_backward(q, k, v, out, lse, dout, causal, pad, use_pad, block_q, block_k,
                    dq, dk, dv):
    """Parallel over (batch, head); inside, key blocks outer and query blocks inner, so
    dK and dV of a key block and dQ of the head are written by one thread only."""
    batch, heads, nq, d = q.shape
    nk = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    for task in nb.prange(batch * heads):
        b = task // heads
        h = task % heads
        delta = np.zeros(nq, dtype=np.float64)  # rowsum(dO * O), D in FlashAttention-2
        for i in range(nq):
            acc = 0.0
            for c in range(d):
                acc += dout[b, h, i, c] * out[b, h, i, c]
            delta[i] = acc
        for j0 in range(0, nk, block_k):
            j1 = min(nk, j0 + block_k)
            kb = k[b, h, j0:j1]
            vb = v[b, h, j0:j1]
            dkb = np.zeros((j1 - j0, d), dtype=q.dtype)
            dvb = np.zeros((j1 - j0, d), dtype=q.dtype)
            i_start = (j0 // block_q) * block_q if causal else 0
            for i0 in range(i_start, nq, block_q):
                i1 = min(nq, i0 + block_q)
                qb = q[b, h, i0:i1]
                dob = dout[b, h, i0:i1]
                p = np.dot(qb, kb.T)
                for i in range(i1 - i0):
                    row_lse = lse[b, h, i0 + i]
                    if row_lse == -np.inf:  # a row that saw no key
                        p[i, :] = -np.inf
                    else:
                        for j in range(j1 - j0):
                            p[i, j] = p[i, j] * scale - row_lse
                if (causal and j1 - 1 > i0) or use_pad:
                    _mask_block(p, i0, j0, causal, pad[b], use_pad)
                flat = p.reshape(-1)
                exp_into(flat, flat)  # what is invisible is -inf, and exp makes it 0
                dvb += np.dot(p.T, dob)
                ds = np.dot(dob, vb.T)
                for i in range(i1 - i0):
                    for j in range(j1 - j0):
                        ds[i, j] = p[i, j] * (ds[i, j] - delta[i0 + i]) * scale
                dkb += np.dot(ds.T, qb)
                dq[b, h, i0:i1] += np.dot(ds, kb)
            dk[b, h, j0:j1] = dkb
            dv[b, h, j0:j1] = dvb


def _padding(key_padding_mask, batch, nk):
    if key_padding_mask is None:
        return np.zeros((batch, nk), dtype=np.bool_), False
    return np.ascontiguousarray(key_padding_mask, dtype=np.bool_), True


def flash_attention_forward(q, k, v, causal=False, key_padding_mask=None, block_q=BLOCK_Q,
                            block_k=BLOCK_K):
    """Tiled attention with an online softmax. Returns (out, lse); see the module doc."""
    _check(q, k, v, key_padding_mask, block_q, block_k)
    q, k, v = (np.ascontiguousarray(a) for a in (q, k, v))
    pad, use_pad = _padding(key_padding_mask, k.shape[0], k.shape[2])
    out = np.empty_like(q)
    lse = np.empty(q.shape[:3], dtype=q.dtype)
    with kernel_blas_single_threaded():  # BLAS inside prange: one thread each
        _flash_forward(q, k, v, causal, pad, use_pad, int(block_q), int(block_k), out, lse)
    return out, lse


def flash_attention_backward(q, k, v, out, lse, dout, causal=False, key_padding_mask=None,
                             block_q=BLOCK_Q, block_k=BLOCK_K):
    """Gradients (dq, dk, dv), recomputing the scores block by block from q, k, lse."""
    _check(q, k, v, key_padding_mask, block_q, block_k, extra={"out": out, "dout": dout})
    q, k, v, out, dout = (np.ascontiguousarray(a) for a in (q, k, v, out, dout))
    pad, use_pad = _padding(key_padding_mask, k.shape[0], k.shape[2])
    dq = np.zeros_like(q)
    dk = np.empty_like(k)
    dv = np.empty_like(v)
    with kernel_blas_single_threaded():
        _flash_backward(q, k, v, out, np.ascontiguousarray(lse), dout, causal, pad, use_pad,
                        int(block_q), int(block_k), dq, dk, dv)
    return dq, dk, dv


IMPLEMENTATIONS = {
    "flash": (flash_attention_forward, flash_attention_backward),
    "naive": (naive_attention_forward, naive_attention_backward),
}
