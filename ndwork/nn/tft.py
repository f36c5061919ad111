"""The Temporal Fusion Transformer's layers, as NeuralForecast builds them: gated
residual networks, variable selection networks, the static covariate encoder and the
interpretable multi-head attention (one value projection shared by the heads, their
outputs averaged)."""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.nn import LayerNorm, Linear, ParameterSpec

LN_EPS = 1e-3
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def activation(x: Tensor, name: str) -> Tensor:
    """NeuralForecast's grn_activation names."""
    if name in ("ReLU", "Tanh", "Sigmoid", "ELU", "GELU"):
        return ops.activation(x, name.lower())
    if name == "Softplus":
        return ops.softplus(x)
    slope = ops.constant(np.asarray(0.01 if name == "LeakyReLU" else SELU_ALPHA, x.data.dtype))
    if name == "LeakyReLU":
        return ops.maximum(x, ops.mul(x, slope))
    zero = ops.constant(np.zeros((), x.data.dtype))  # SELU: scale (max(x, 0) + alpha min(elu, 0))
    negative = ops.mul(ops.minimum(ops.activation(x, "elu"), zero), slope)
    return ops.mul(ops.add(ops.maximum(x, zero), negative),
                   ops.constant(np.asarray(SELU_SCALE, x.data.dtype)))


ACTIVATIONS = ("ReLU", "Softplus", "Tanh", "SELU", "LeakyReLU", "Sigmoid", "ELU", "GELU")


class GLU:
    """Linear to twice the width, the first half gated by the sigmoid of the second."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int):
        self.lin = Linear(spec, f"{name}.lin", in_features, 2 * out_features)

    def __call__(self, p, x: Tensor) -> Tensor:
        return ops.glu(self.lin(p, x))


class GRN:
    """Gated residual network: LayerNorm(skip(a) + GLU(dropout(W_i act(W_a a + W_c c))));
    the skip is a projection when the output width differs (output_size), and a width
    of one has no LayerNorm, as in NeuralForecast."""

    def __init__(self, spec: ParameterSpec, name: str, input_size: int, hidden_size: int,
                 output_size: int | None = None, context_size: int | None = None,
                 dropout: float = 0.0, activation_name: str = "ELU"):
        out = output_size or hidden_size
        self.norm = None if output_size == 1 else LayerNorm(spec, f"{name}.layer_norm.ln", out)
        self.lin_a = Linear(spec, f"{name}.lin_a", input_size, hidden_size)
        self.lin_c = (Linear(spec, f"{name}.lin_c", context_size, hidden_size, bias=False)
                      if context_size else None)
        self.lin_i = Linear(spec, f"{name}.lin_i", hidden_size, hidden_size)
        self.glu = GLU(spec, f"{name}.glu", hidden_size, out)
        self.out_proj = Linear(spec, f"{name}.out_proj", input_size, output_size) \
            if output_size else None
        self.dropout, self.activation_name = dropout, activation_name

    def __call__(self, p, a: Tensor, rng, context: Tensor | None = None) -> Tensor:
        x = self.lin_a(p, a)
        if context is not None:  # (B, C) -> broadcast over a's time axis
            c = self.lin_c(p, context)
            x = ops.add(x, ops.reshape(c, (c.shape[0], 1, c.shape[1])) if len(a.shape) == 3
                        else c)
        x = ops.dropout(self.lin_i(p, activation(x, self.activation_name)), self.dropout, rng)
        x = ops.add(self.glu(p, x), a if self.out_proj is None else self.out_proj(p, a))
        return x if self.norm is None else ops.layernorm(x, p[self.norm.gamma],
                                                         p[self.norm.beta], LN_EPS)


class VariableSelection:
    """Each of V embedded variables (..., V, D) through its own GRN, summed with
    softmax weights from a GRN over all of them (and a context): -> ((..., D), weights
    (..., V))."""

    def __init__(self, spec, name, hidden_size, n_inputs, dropout, activation_name):
        self.joint = GRN(spec, f"{name}.joint_grn", hidden_size * n_inputs, hidden_size,
                         n_inputs, hidden_size, activation_name=activation_name)
        self.variables = [GRN(spec, f"{name}.var_grns.{i}", hidden_size, hidden_size,
                              dropout=dropout, activation_name=activation_name)
                          for i in range(n_inputs)]

    def __call__(self, p, x: Tensor, rng, context: Tensor | None = None):
        *lead, n, d = x.shape
        weights = ops.activation(self.joint(p, ops.reshape(x, (*lead, n * d)), rng, context),
                                 "softmax")
        idx = (slice(None),) * len(lead)
        selected = None
        for i, grn in enumerate(self.variables):
            transformed = grn(p, ops.index(x, (*idx, i)), rng)
            term = ops.mul(transformed, ops.index(weights, (*idx, slice(i, i + 1))))
            selected = term if selected is None else ops.add(selected, term)
        return selected, weights


class StaticCovariateEncoder:
    """Variable selection over the statics, then GRNs for the contexts: variable
    selection (cs), enrichment (ce), and the recurrent encoders' initial states, one per
    layer (or one for all with one_rnn_initial_state), hidden and, for LSTM, cell."""

    def __init__(self, spec, name, hidden_size, n_static, dropout, activation_name, rnn_type,
                 n_rnn_layers, one_rnn_initial_state):
        self.vsn = VariableSelection(spec, f"{name}.vsn", hidden_size, n_static, dropout,
                                     activation_name)
        self.n_states = 1 if one_rnn_initial_state else n_rnn_layers
        n_contexts = 2 + (2 if rnn_type == "lstm" else 1) * self.n_states
        self.contexts = [GRN(spec, f"{name}.context_grns.{i}", hidden_size, hidden_size,
                             dropout=dropout) for i in range(n_contexts)]
        self.rnn_type, self.n_rnn_layers = rnn_type, n_rnn_layers

    def __call__(self, p, x: Tensor, rng):
        """x (B, S, D) -> cs, ce (B, D), per-layer initial states [(h0, c0) or (h0,)],
        and the statics' selection weights (B, S)."""
        ctx, weights = self.vsn(p, x, rng)
        cs, ce = (grn(p, ctx, rng) for grn in self.contexts[:2])
        per_state = [grn(p, ctx, rng) for grn in self.contexts[2:]]
        hidden, cell = per_state[:self.n_states], per_state[self.n_states:]
        if self.n_states == 1:  # one state shared by every layer
            hidden, cell = hidden * self.n_rnn_layers, cell * self.n_rnn_layers
        states = [(h, c) for h, c in zip(hidden, cell, strict=True)] if cell else \
            [(h,) for h in hidden]
        return cs, ce, states, weights


class InterpretableAttention:
    """NeuralForecast's InterpretableMultiHeadAttention: per-head queries and keys, one
    value projection shared by the heads, causal, the heads' outputs averaged, then
    projected. Runs on ops.attention (flash: no (N, N) matrix); `probabilities` gives the
    window- and head-averaged attention matrix on request, by chunks of windows."""

    def __init__(self, spec, name, n_head, hidden_size, dropout):
        if hidden_size % n_head:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by n_head={n_head}.")
        self.n_head, self.d_head = n_head, hidden_size // n_head
        self.qkv = Linear(spec, f"{name}.qkv_linears", hidden_size,
                          (2 * n_head + 1) * self.d_head, bias=False)
        self.out_proj = Linear(spec, f"{name}.out_proj", self.d_head, hidden_size, bias=False)
        self.dropout = dropout

    def _heads(self, p, x):
        b, t, _ = x.shape
        qkv, width = self.qkv(p, x), self.n_head * self.d_head
        q, k = (ops.transpose(ops.reshape(ops.index(qkv, (slice(None), slice(None),
                                                          slice(i * width, (i + 1) * width))),
                                          (b, t, self.n_head, self.d_head)), (0, 2, 1, 3))
                for i in (0, 1))
        v = ops.index(qkv, (slice(None), slice(None), slice(2 * width, None)))
        return q, k, v

    def __call__(self, p, x: Tensor, rng) -> tuple[Tensor, tuple[np.ndarray, np.ndarray]]:
        """The attended values (B, T, D), and the queries' and keys' values, from which
        `probabilities` computes the attention matrix on request."""
        b, t, _ = x.shape
        q, k, v = self._heads(p, x)
        shared = ops.broadcast(ops.reshape(v, (b, 1, t, self.d_head)),
                               (b, self.n_head, t, self.d_head))
        heads = ops.attention(q, k, shared, causal=True)
        mean = ops.reshape(ops.mean(heads, axis=1), (b, t, self.d_head))
        return ops.dropout(self.out_proj(p, mean), self.dropout, rng), (q.data, k.data)

    @staticmethod
    def probabilities(q: np.ndarray, k: np.ndarray, budget: int = 1 << 24) -> np.ndarray:
        """The causal attention probabilities (t, t) of queries and keys (B, heads, t, d),
        averaged over windows and heads, in chunks of windows of at most `budget` scores."""
        b, heads, t, d = q.shape
        future = np.triu(np.ones((t, t), dtype=bool), 1)
        total = np.zeros((t, t))
        step = max(1, budget // (heads * t * t))
        for start in range(0, b, step):
            scores = q[start:start + step] @ k[start:start + step].transpose(
                0, 1, 3, 2) / np.sqrt(d)
            scores[..., future] = -np.inf
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            total += (scores / scores.sum(axis=-1, keepdims=True)).sum(axis=(0, 1))
        return total / (b * heads)
