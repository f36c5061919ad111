"""xLSTM's block stack, as the `xlstm` package (2.0) builds it for NeuralForecast's xLSTM:
pre-norm residual blocks, all mLSTM or all sLSTM, then a LayerNorm. Shapes, parameter
names and initializations follow the package's, so a NeuralForecast state dict maps one
to one (ndwork.bench.fidelity); weights are stored (in, out) where torch's are (out, in).

mLSTM block: x + mLSTMLayer(norm(x)). The layer projects up to 2I (I = 2 x dim, rounded up
to a multiple of 64), convolves one half causally (kernel 4, per channel) into q and k,
takes v from it unconvolved, runs the mLSTM cell (ndwork.kernels.xlstm) over NH = 4 heads,
normalizes per head, adds a learnable skip of the convolved input, gates with silu of the
other half and projects down.
sLSTM block: x + sLSTMLayer(norm(x)), then + GatedFeedForward(norm(x)). The layer's
input and forget gates come from the convolved input, z and o from the input itself,
through head-wise (block-diagonal) projections; the cell's recurrence is head-wise too.
"""

from __future__ import annotations

import math

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.nn import ParameterSpec

HEADS = 4  # the package's default, for both cells
CONV_KERNEL = 4
QKV_BLOCK = 4  # mLSTM's q, k, v projections are block-diagonal in blocks of 4 features


def _round_up_64(size: float) -> int:
    return int(math.ceil(size / 64) * 64)


def silu(x: Tensor) -> Tensor:
    return ops.mul(x, ops.activation(x, "sigmoid"))


def _offset_from_one(p, name: str, like: Tensor) -> Tensor:
    """The package's norms store their weight as an offset from 1 (initialized to 0)."""
    return ops.add(p[name], ops.constant(np.ones(p[name].shape, like.data.dtype)))


class Dense:
    """A Linear with the package's initializations: N(0, std) weights, zero bias."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int,
                 bias: bool, std: float):
        self.weight = spec.add(f"{name}.weight", (in_features, out_features), "normal", std)
        self.bias = spec.add(f"{name}.bias", (out_features,), "constant", 0.0) if bias else None

    def __call__(self, p, x: Tensor) -> Tensor:
        return ops.linear(x, p[self.weight], p[self.bias] if self.bias else None)


class Norm:
    """LayerNorm over the last axis, weight only, stored as an offset from 1. With heads,
    the package's MultiHeadLayerNorm: each head's features normalized on their own."""

    def __init__(self, spec: ParameterSpec, name: str, features: int, heads: int = 1):
        self.weight = spec.add(f"{name}.weight", (features,), "constant", 0.0)
        self.heads = heads

    def __call__(self, p, x: Tensor) -> Tensor:
        shape = x.shape
        xh = ops.reshape(x, (*shape[:-1], self.heads, shape[-1] // self.heads))
        size, dtype = xh.shape[-1], x.data.dtype
        normed = ops.layernorm(xh, ops.constant(np.ones(size, dtype)),
                               ops.constant(np.zeros(size, dtype)))
        return ops.mul(ops.reshape(normed, shape), _offset_from_one(p, self.weight, x))


class CausalDepthwiseConv:
    """The package's CausalConv1d: per channel, kernel 4, torch's Conv1d initialization."""

    def __init__(self, spec: ParameterSpec, name: str, channels: int):
        bound = 1 / math.sqrt(CONV_KERNEL)  # fan_in of a depthwise kernel: 1 x K
        self.weight = spec.add(f"{name}.conv.weight", (CONV_KERNEL, channels), "uniform", bound)
        self.bias = spec.add(f"{name}.conv.bias", (channels,), "uniform", bound)

    def __call__(self, p, x: Tensor) -> Tensor:
        return ops.depthwise_causal_conv(x, p[self.weight], p[self.bias])


class HeadwiseLinear:
    """The package's LinearHeadwiseExpand (expansion 1): weights (heads, d, d)."""

    def __init__(self, spec: ParameterSpec, name: str, features: int, heads: int, bias: bool,
                 std: float):
        size = features // heads
        self.weight = spec.add(f"{name}.weight", (heads, size, size), "normal", std)
        self.bias = spec.add(f"{name}.bias", (features,), "constant", 0.0) if bias else None

    def __call__(self, p, x: Tensor) -> Tensor:
        y = ops.headwise_linear(x, p[self.weight])
        return ops.add(y, p[self.bias]) if self.bias else y


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, S, NH * d) -> (B, S, NH, d), a view."""
    b, s, f = x.shape
    return ops.reshape(x, (b, s, heads, f // heads))


class MLSTMLayer:
    def __init__(self, spec: ParameterSpec, name: str, dim: int, bias: bool, dropout: float,
                 n_blocks: int):
        inner = _round_up_64(2.0 * dim)
        small, wang = math.sqrt(2 / (5 * dim)), 2 / n_blocks / math.sqrt(dim)
        self.skip = spec.add(f"{name}.learnable_skip", (inner,), "constant", 1.0)  # torch's order
        self.proj_up = Dense(spec, f"{name}.proj_up", dim, 2 * inner, bias, small)
        self.q_proj, self.k_proj, self.v_proj = (
            HeadwiseLinear(spec, f"{name}.{kind}_proj", inner, inner // QKV_BLOCK, bias, small)
            for kind in "qkv")
        self.conv1d = CausalDepthwiseConv(spec, f"{name}.conv1d", inner)
        cell = f"{name}.mlstm_cell"
        self.igate_w = spec.add(f"{cell}.igate.weight", (3 * inner, HEADS), "constant", 0.0)
        self.igate_b = spec.add(f"{cell}.igate.bias", (HEADS,), "normal", 0.1)
        self.fgate_w = spec.add(f"{cell}.fgate.weight", (3 * inner, HEADS), "constant", 0.0)
        self.fgate_b = spec.add(f"{cell}.fgate.bias", (HEADS,), "fixed",
                                np.linspace(3.0, 6.0, HEADS))
        self.outnorm = Norm(spec, f"{cell}.outnorm", inner, HEADS)
        self.proj_down = Dense(spec, f"{name}.proj_down", inner, dim, bias, wang)
        self.inner, self.dropout = inner, dropout

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        up = self.proj_up(p, x)
        x_mlstm = ops.index(up, (Ellipsis, slice(None, self.inner)))
        z = ops.index(up, (Ellipsis, slice(self.inner, None)))
        x_conv = silu(self.conv1d(p, x_mlstm))
        q, k = self.q_proj(p, x_conv), self.k_proj(p, x_conv)
        v = self.v_proj(p, x_mlstm)
        gate_input = ops.concat([q, k, v], axis=2)
        ig = ops.linear(gate_input, p[self.igate_w], p[self.igate_b])  # (B, S, NH)
        fg = ops.linear(gate_input, p[self.fgate_w], p[self.fgate_b])
        h = ops.mlstm(_split_heads(q, HEADS), _split_heads(k, HEADS), _split_heads(v, HEADS),
                      ig, fg)  # (B, S, NH, d)
        h = self.outnorm(p, ops.reshape(h, (*h.shape[:2], self.inner)))
        h = ops.add(h, ops.mul(p[self.skip], x_conv))
        h = ops.mul(h, silu(z))
        return ops.dropout(self.proj_down(p, h), self.dropout, rng)


class SLSTMLayer:
    def __init__(self, spec: ParameterSpec, name: str, dim: int, dropout: float,
                 block_index: int, n_blocks: int):
        small = math.sqrt(2 / (5 * dim))
        self.conv1d = CausalDepthwiseConv(spec, f"{name}.conv1d", dim)
        # the package computes its input gate with the module it names fgate and its forget
        # gate with igate; the names are kept so that state dicts map one to one
        self.gates = [HeadwiseLinear(spec, f"{name}.{gate}", dim, HEADS, False, small)
                      for gate in ("fgate", "igate", "zgate", "ogate")]
        head = dim // HEADS
        self.recurrent = spec.add(f"{name}.slstm_cell.recurrent_kernel",
                                  (HEADS, head, 4 * head), "constant", 0.0)
        self.bias = spec.add(f"{name}.slstm_cell.bias", (4 * dim,), "fixed",
                             self._bias_init(dim, block_index, n_blocks))
        self.group_norm = Norm(spec, f"{name}.group_norm", dim, HEADS)
        self.dropout = dropout

    @staticmethod
    def _bias_init(dim: int, block_index: int, n_blocks: int) -> np.ndarray:
        """The package's "powerlaw_blockdependent" forget-gate bias, zeros elsewhere."""
        head = dim // HEADS
        ratio = block_index / (n_blocks - 1) if n_blocks > 1 else 0.0
        bias = np.zeros((4, HEADS, head))
        bias[1] = 5.0 - 12.0 * (np.arange(head) / max(head - 1, 1)) ** (0.3 + 1.3 * ratio)
        return bias.ravel()

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        x_conv = silu(self.conv1d(p, x))
        i, f, z, o = (gate(p, source) for gate, source in zip(self.gates, (x_conv, x_conv, x, x),
                                                               strict=True))
        xw = ops.transpose(ops.concat([i, f, z, o], axis=2), (1, 0, 2))  # time-major
        y = ops.transpose(ops.slstm(xw, p[self.recurrent], p[self.bias]), (1, 0, 2))
        return self.group_norm(p, ops.dropout(y, self.dropout, rng))


class GatedFeedForward:
    def __init__(self, spec: ParameterSpec, name: str, dim: int, n_blocks: int):
        self.hidden = _round_up_64(1.3 * dim)
        self.proj_up = Dense(spec, f"{name}.proj_up", dim, 2 * self.hidden, False,
                             math.sqrt(2 / (5 * dim)))
        self.proj_down = Dense(spec, f"{name}.proj_down", self.hidden, dim, False,
                               2 / n_blocks / math.sqrt(dim))

    def __call__(self, p, x: Tensor) -> Tensor:
        up = self.proj_up(p, x)
        gate = ops.activation(ops.index(up, (Ellipsis, slice(None, self.hidden))), "gelu")
        return self.proj_down(p, ops.mul(gate, ops.index(up, (Ellipsis, slice(self.hidden, None)))))


class XLSTMBlockStack:
    """x (B, S, dim) -> (B, S, dim)."""

    def __init__(self, spec: ParameterSpec, name: str, backbone: str, dim: int, n_blocks: int,
                 bias: bool, dropout: float):
        self.blocks = []
        for index in range(n_blocks):
            prefix = f"{name}.blocks.{index}"
            norm = Norm(spec, f"{prefix}.xlstm_norm", dim)
            if backbone == "mLSTM":
                layer = MLSTMLayer(spec, f"{prefix}.xlstm", dim, bias, dropout, n_blocks)
                ffn = None
            else:
                layer = SLSTMLayer(spec, f"{prefix}.xlstm", dim, dropout, index, n_blocks)
                ffn = (Norm(spec, f"{prefix}.ffn_norm", dim),
                       GatedFeedForward(spec, f"{prefix}.ffn", dim, n_blocks))
            self.blocks.append((norm, layer, ffn))
        self.post_blocks_norm = Norm(spec, f"{name}.post_blocks_norm", dim)

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        for norm, layer, ffn in self.blocks:
            x = ops.add(x, layer(p, norm(p, x), rng))
            if ffn is not None:
                ffn_norm, feed_forward = ffn
                x = ops.add(x, feed_forward(p, ffn_norm(p, x)))
        return self.post_blocks_norm(p, x)
