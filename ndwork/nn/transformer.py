"""Transformer layers: multi-head attention, embeddings, encoder and decoder blocks,
as NeuralForecast's common modules define them (Conv1d with kernel 1 is a Linear)."""

from __future__ import annotations

import functools
import math

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.config import active
from ndwork.nn import LayerNorm, Linear, ParameterSpec


class MultiHeadAttention:
    """Project to H heads, attend (flash or naive per Optimizations), project back.

    x_q (B, Nq, C), x_kv (B, Nk, C) -> (B, Nq, C)."""

    def __init__(self, spec: ParameterSpec, name: str, hidden_size: int, n_heads: int):
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by n_heads={n_heads}.")
        self.query = Linear(spec, f"{name}.query_projection", hidden_size, hidden_size)
        self.key = Linear(spec, f"{name}.key_projection", hidden_size, hidden_size)
        self.value = Linear(spec, f"{name}.value_projection", hidden_size, hidden_size)
        self.out = Linear(spec, f"{name}.out_projection", hidden_size, hidden_size)
        self.n_heads = n_heads

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return ops.transpose(ops.reshape(x, (b, n, self.n_heads, c // self.n_heads)), (0, 2, 1, 3))

    def __call__(self, p, x_q: Tensor, x_kv: Tensor, causal: bool = False,
                 key_padding_mask: np.ndarray | None = None) -> Tensor:
        b, n, c = x_q.shape
        # mixed precision keeps q, k, v in the low precision: attention's inputs
        q = self._heads(self.query(p, x_q, hidden=True))
        k = self._heads(self.key(p, x_kv, hidden=True))
        v = self._heads(self.value(p, x_kv, hidden=True))
        heads = ops.attention(q, k, v, causal, key_padding_mask)
        merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (b, n, c))
        return self.out(p, merged)


class FeedForward:
    """Conv1d(k=1) -> activation -> dropout -> Conv1d(k=1) -> dropout."""

    def __init__(self, spec, name, hidden_size, conv_hidden_size, activation, dropout,
                 bias=True):
        self.conv1 = Linear(spec, f"{name}.conv1", hidden_size, conv_hidden_size, bias)
        self.conv2 = Linear(spec, f"{name}.conv2", conv_hidden_size, hidden_size, bias)
        self.activation, self.dropout = activation, dropout

    def __call__(self, p, x, rng):
        y = ops.dropout(ops.activation(self.conv1(p, x), self.activation), self.dropout, rng)
        return ops.dropout(self.conv2(p, y), self.dropout, rng)


class EncoderLayer:
    """x = norm1(x + attn(x)); x = norm2(x + ffn(x)) (post-norm)."""

    def __init__(self, spec, name, hidden_size, n_heads, conv_hidden_size, activation, dropout):
        self.attention = MultiHeadAttention(spec, f"{name}.attention", hidden_size, n_heads)
        self.ffn = FeedForward(spec, name, hidden_size, conv_hidden_size, activation, dropout)
        self.norm1 = LayerNorm(spec, f"{name}.norm1", hidden_size)
        self.norm2 = LayerNorm(spec, f"{name}.norm2", hidden_size)
        self.dropout = dropout

    def __call__(self, p, x, rng, causal=False):
        x = self.norm1(p, ops.add(x, ops.dropout(self.attention(p, x, x, causal), self.dropout, rng)))
        return self.norm2(p, ops.add(x, self.ffn(p, x, rng)))


class DecoderLayer:
    """Self-attention, cross-attention to the encoder output, feed-forward; post-norm."""

    def __init__(self, spec, name, hidden_size, n_heads, conv_hidden_size, activation, dropout):
        self.self_attention = MultiHeadAttention(spec, f"{name}.self_attention", hidden_size,
                                                 n_heads)
        self.cross_attention = MultiHeadAttention(spec, f"{name}.cross_attention", hidden_size,
                                                  n_heads)
        self.ffn = FeedForward(spec, name, hidden_size, conv_hidden_size, activation, dropout)
        self.norms = [LayerNorm(spec, f"{name}.norm{i}", hidden_size) for i in (1, 2, 3)]
        self.dropout = dropout

    def __call__(self, p, x, memory, rng, causal=False):
        drop = self.dropout
        x = self.norms[0](p, ops.add(x, ops.dropout(self.self_attention(p, x, x, causal), drop, rng)))
        x = self.norms[1](p, ops.add(x, ops.dropout(self.cross_attention(p, x, memory), drop, rng)))
        return self.norms[2](p, ops.add(x, self.ffn(p, x, rng)))


def decoder_label_len(input_size: int, multiplier: float, activation: str) -> int:
    """The decoder's known part, ceil(input_size * multiplier), after checking the
    encoder-decoder options NeuralForecast's transformers share."""
    label_len = int(math.ceil(input_size * multiplier))
    if not 0 < label_len < input_size:
        raise ValueError(f"decoder_input_size_multiplier={multiplier} must lie in (0, 1).")
    if activation not in ("relu", "gelu"):
        raise ValueError(f"activation {activation!r} must be 'relu' or 'gelu'.")
    return label_len


def sinusoidal_positions(length: int, hidden_size: int) -> np.ndarray:
    """(length, hidden_size) fixed positional encoding (sin on even, cos on odd channels),
    in the compute dtype (read-only: cached, every forward adds it)."""
    return _positions(length, hidden_size, np.dtype(active().dtypes.compute))


@functools.lru_cache(maxsize=64)
def _positions(length: int, hidden_size: int, dtype: np.dtype) -> np.ndarray:
    position = np.arange(length, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, hidden_size, 2) * -(math.log(10000.0) / hidden_size))
    table = np.zeros((length, hidden_size))
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)[:, : hidden_size // 2]
    table = table.astype(dtype)
    table.flags.writeable = False
    return table


def time_steps(x, steps: slice):
    """x (B, T, ...)'s time steps `steps`, as a tensor (None stays None)."""
    return None if x is None else ops.index(ops.as_tensor(x), (slice(None), steps))


class DataEmbedding:
    """Value embedding (Conv1d, kernel 3, circular padding, no bias) + fixed positions
    (unless `positions=False`: Autoformer, FEDformer) (+ a linear embedding of the
    exogenous inputs), then dropout."""

    def __init__(self, spec, name, exog_size, hidden_size, dropout, positions=True):
        # torch's kaiming_normal_(fan_in, leaky_relu): std = sqrt(2 / (1 + 0.01^2)) / sqrt(3)
        std = math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(3)
        self.value = spec.add(f"{name}.value_embedding.tokenConv.weight", (3, hidden_size),
                              "normal", std)
        self.temporal = (Linear(spec, f"{name}.temporal_embedding", exog_size, hidden_size,
                                bias=False) if exog_size else None)
        self.hidden_size, self.dropout, self.positions = hidden_size, dropout, positions

    def __call__(self, p, x: np.ndarray, exog: np.ndarray | Tensor | None, rng) -> Tensor:
        """x (B, N) values, exog (B, N, X) -> (B, N, C)."""
        taps = np.stack([np.roll(x, 1, axis=1), x, np.roll(x, -1, axis=1)], axis=2)
        y = ops.matmul(ops.constant(taps), p[self.value])
        if self.positions:
            positions = sinusoidal_positions(x.shape[1], self.hidden_size).astype(x.dtype,
                                                                              copy=False)
            y = ops.add(y, ops.constant(positions))
        if self.temporal is not None:
            y = ops.add(y, self.temporal(p, ops.as_tensor(exog)))
        return ops.dropout(y, self.dropout, rng)
