"""Layers: each declares its parameters in a `ParameterSpec` and applies ops to a
parameter dict, so a model's forward is a pure function of (parameters, batch)."""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.config import active
from ndwork.kernels.linear import ACTIVATIONS as FUSED_ACTIVATIONS


class ParameterSpec:
    """Names, shapes and initializers of a model's trainable parameters, in order."""

    def __init__(self):
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inits: dict[str, tuple[str, float]] = {}
        self.buffers: dict[str, np.ndarray] = {}  # running statistics: state, not parameters
        self.complex: set[str] = set()  # stored as (..., 2) (real, imaginary) pairs

    def add(self, name: str, shape: tuple[int, ...], init: str,
            scale: float | np.ndarray = 0.0) -> str:
        if name in self.shapes:
            raise ValueError(f"parameter {name!r} declared twice")
        self.shapes[name] = tuple(int(s) for s in shape)
        self.inits[name] = (init, scale)
        return name

    def add_complex(self, name: str, shape: tuple[int, ...], init: str,
                    scale: float | np.ndarray = 0.0) -> str:
        """A complex parameter (FEDformer's Fourier weights), stored as (*shape, 2) real
        pairs and counted as torch counts it: one per complex number."""
        self.complex.add(name)
        return self.add(name, (*shape, 2), init, scale)

    def size(self) -> int:
        """Parameters as torch counts them (a complex number is one)."""
        return sum(int(np.prod(s)) // (2 if n in self.complex else 1)
                   for n, s in self.shapes.items())

    def add_buffer(self, name: str, initial: np.ndarray) -> str:
        if name in self.buffers or name in self.shapes:
            raise ValueError(f"{name!r} declared twice")
        self.buffers[name] = np.asarray(initial, dtype=np.float64)  # cast per policy below
        return name

    def initial_buffers(self) -> dict[str, np.ndarray]:
        """Running statistics are state kept like the master weights: in the param dtype."""
        dtype = active().dtypes.param
        return {name: value.astype(dtype) for name, value in self.buffers.items()}

    def initialize(self, rng: np.random.Generator, dtype=None) -> np.ndarray:
        """Draw every parameter: "uniform" U(-scale, scale) (torch's Linear default with
        scale = 1/sqrt(fan_in)), "normal" N(0, scale), "constant" scale, "fixed" the
        given array of values, "draw" the values of the function scale(rng) (an
        initialization of its own: KAN's least-squares spline fit to noise)."""
        parts = []
        for name, shape in self.shapes.items():
            init, scale = self.inits[name]
            if init == "uniform":
                parts.append(rng.uniform(-scale, scale, size=shape).ravel())
            elif init == "normal":
                parts.append(rng.normal(0, scale, size=shape).ravel())
            elif init == "draw":
                parts.append(np.asarray(scale(rng), float).reshape(-1))
            elif init == "fixed":
                parts.append(np.broadcast_to(np.asarray(scale, float), shape).ravel())
            else:
                parts.append(np.full(int(np.prod(shape)), scale))
        dtype = dtype or active().dtypes.param
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def categorical_embedding_size(strategy: str | int, cardinality: int) -> int:
    """NeuralForecast's cat_emb_dim: an integer, or "fastai", "sqrt" or "half"."""
    if isinstance(strategy, int | np.integer) and not isinstance(strategy, bool) and strategy > 0:
        return int(strategy)
    rules = {"fastai": lambda c: min(50, int(np.ceil(1.6 * c ** 0.56))),
             "sqrt": lambda c: min(50, int(np.ceil(c ** 0.5))),
             "half": lambda c: min(50, (c + 1) // 2)}
    if strategy not in rules:
        raise ValueError(f"cat_emb_dim={strategy!r} must be a positive integer or one of "
                         f"{list(rules)} (NeuralForecast's).")
    return rules[strategy](cardinality)


class ExogEmbeddings:
    """One exogenous stream (hist, futr or stat) with its categorical columns embedded,
    as NeuralForecast feeds it: the continuous columns first, then each categorical
    column's embedding (a table of cardinality + 1 rows, N(0, 1) as torch's, row 0 for
    categories unseen at fit)."""

    def __init__(self, spec: ParameterSpec, stream: str, columns: list[str],
                 categorical: list[str], cardinalities: dict, dims: dict):
        self.continuous = [i for i, c in enumerate(columns) if c not in categorical]
        self.tables = [(columns.index(c), spec.add(f"cat_embeddings.{stream}.{c}",
                                                   (cardinalities[c] + 1, dims[c]), "normal", 1.0))
                       for c in categorical if c in columns]
        self.size = len(self.continuous) + sum(dims[c] for c in categorical if c in columns)

    def __call__(self, p, x: np.ndarray) -> Tensor:
        """x (..., columns), categorical columns as integer codes -> (..., size)."""
        parts = [ops.constant(np.ascontiguousarray(x[..., self.continuous]))] \
            if self.continuous else []
        parts += [ops.embedding(p[name], x[..., pos]) for pos, name in self.tables]
        return ops.concat(parts, axis=-1) if len(parts) > 1 else parts[0]


class Linear:
    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int,
                 bias: bool = True):
        bound = 1 / np.sqrt(in_features) if in_features else 0.0  # torch's, even for 0 inputs
        self.weight = spec.add(f"{name}.weight", (in_features, out_features), "uniform", bound)
        self.bias = spec.add(f"{name}.bias", (out_features,), "uniform", bound) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, p: dict[str, Tensor], x: Tensor, activation: str = "identity",
                 hidden: bool | None = None) -> Tensor:
        """hidden: see ops.linear (mixed precision keeps hidden activations low)."""
        bias = p[self.bias] if self.bias else None
        if activation in FUSED_ACTIVATIONS:
            return ops.linear(x, p[self.weight], bias, activation, hidden)
        return ops.activation(ops.linear(x, p[self.weight], bias, hidden=hidden), activation)


class LayerNorm:
    """torch's LayerNorm; `shape` several axes (TSMixerx's (h, C)) normalizes over
    them together, with weights of that shape."""

    def __init__(self, spec: ParameterSpec, name: str, features: int | tuple[int, ...]):
        shape = (features,) if isinstance(features, int) else tuple(features)
        self.gamma = spec.add(f"{name}.weight", shape, "constant", 1.0)
        self.beta = spec.add(f"{name}.bias", shape, "constant", 0.0)
        self.size = int(np.prod(shape))

    def __call__(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        gamma, beta = p[self.gamma], p[self.beta]
        if len(gamma.shape) == 1:
            return ops.layernorm(x, gamma, beta)
        lead = x.shape[:len(x.shape) - len(gamma.shape)]
        flat = ops.layernorm(ops.reshape(x, (*lead, self.size)), ops.reshape(gamma, (self.size,)),
                             ops.reshape(beta, (self.size,)))
        return ops.reshape(flat, x.shape)


class MLPStack:
    """NeuralForecast's block MLP: Linear(in, u0), then per unit pair Linear + activation
    (+ dropout), then Linear(last, out). Note the first Linear has no activation."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int,
                 mlp_units: list[list[int]], out_features: int, activation: str,
                 dropout: float = 0.0):
        self.first = Linear(spec, f"{name}.0", in_features, mlp_units[0][0])
        self.hidden = [Linear(spec, f"{name}.{i + 1}", a, b) for i, (a, b) in enumerate(mlp_units)]
        self.out = Linear(spec, f"{name}.out", mlp_units[-1][1], out_features)
        self.activation, self.dropout = activation, dropout

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        x = self.first(p, x, hidden=True)  # it feeds the next Linear
        for layer in self.hidden:
            x = ops.dropout(layer(p, x, self.activation), self.dropout, rng)
        return self.out(p, x)


class BatchNorm:
    """BatchNorm1d over the last (channel) axis, as torch: in training (rng given)
    batch statistics, and the running statistics move by `momentum`; in inference the
    running statistics. The running statistics live in p beside the parameters, as
    arrays the training forward updates in place."""

    def __init__(self, spec: ParameterSpec, name: str, features: int, momentum: float = 0.1,
                 eps: float = 1e-5):
        self.gamma = spec.add(f"{name}.weight", (features,), "constant", 1.0)
        self.beta = spec.add(f"{name}.bias", (features,), "constant", 0.0)
        self.mean = spec.add_buffer(f"{name}.running_mean", np.zeros(features))
        self.var = spec.add_buffer(f"{name}.running_var", np.ones(features))
        self.momentum, self.eps = momentum, eps

    def __call__(self, p, x: Tensor, training: bool) -> Tensor:
        shape, channels = x.shape, x.shape[-1]
        x2 = ops.reshape(x, (-1, channels))
        if training:
            rows = x2.shape[0]
            data = x2.data
            running_mean, running_var = p[self.mean], p[self.var]
            running_mean *= 1 - self.momentum
            running_mean += self.momentum * data.mean(axis=0)
            running_var *= 1 - self.momentum
            running_var += self.momentum * data.var(axis=0) * rows / max(rows - 1, 1)
            # per-channel normalization = LayerNorm of the transpose, without its affine part
            ones = ops.constant(np.ones(rows, data.dtype))
            zeros = ops.constant(np.zeros(rows, data.dtype))
            xhat = ops.transpose(ops.layernorm(ops.transpose(x2, (1, 0)), ones, zeros, self.eps),
                                 (1, 0))
        else:
            mean = p[self.mean].astype(x.data.dtype)
            inv_std = (1 / np.sqrt(p[self.var] + self.eps)).astype(x.data.dtype)
            xhat = ops.mul(ops.sub(x2, ops.constant(mean)), ops.constant(inv_std))
        y = ops.add(ops.mul(xhat, p[self.gamma]), p[self.beta])
        return ops.reshape(y, shape)


class MLPDecoder:
    """NeuralForecast's MLP module (the decoder of its RNN, LSTM, GRU and TCN): with
    num_layers = 1 one Linear(in, out); else Linear(in, hidden) + activation, then
    num_layers - 2 times Linear(hidden, hidden) + activation, then Linear(hidden, out);
    dropout after each activation in training."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int,
                 hidden_size: int, num_layers: int, activation: str, dropout: float = 0.0):
        sizes = [in_features] + [hidden_size] * (num_layers - 1) + [out_features]
        self.layers = [Linear(spec, f"{name}.layers.{i}", a, b)
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]
        self.activation, self.dropout = activation, dropout

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        for layer in self.layers[:-1]:
            x = ops.dropout(layer(p, x, self.activation), self.dropout, rng)
        return self.layers[-1](p, x)


class RecurrentStack:
    """PyTorch's nn.RNN / nn.LSTM / nn.GRU with batch_first=True: n_layers recurrent
    layers from a zero state, dropout between layers in training. Weights are stored
    transposed from PyTorch's: weight_ih (in, G), weight_hh (H, G), G = gates x H.
    proj_size > 0 (LSTM only): each layer's output is projected to proj_size features
    (weight_hr (H, P)), which are also its recurrent state, as PyTorch's proj_size."""

    GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}

    def __init__(self, spec: ParameterSpec, name: str, cell: str, input_size: int,
                 hidden_size: int, n_layers: int, bias: bool = True, dropout: float = 0.0,
                 proj_size: int = 0):
        gates = self.GATES[cell] * hidden_size
        state = proj_size or hidden_size
        bound = 1 / np.sqrt(hidden_size)  # PyTorch's initialization of every RNN weight
        self.layers = []
        for layer in range(n_layers):
            fan_in = input_size if layer == 0 else state
            names = [spec.add(f"{name}.weight_ih_l{layer}", (fan_in, gates), "uniform", bound),
                     spec.add(f"{name}.weight_hh_l{layer}", (state, gates), "uniform", bound)]
            names += ([spec.add(f"{name}.bias_{kind}_l{layer}", (gates,), "uniform", bound)
                       for kind in ("ih", "hh")] if bias else [None, None])
            names.append(spec.add(f"{name}.weight_hr_l{layer}", (hidden_size, proj_size),
                                  "uniform", bound) if proj_size else None)
            self.layers.append(names)
        self.cell, self.dropout = cell, dropout

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        """x (B, T, input_size) -> every hidden state of the last layer (B, T, H). The
        layers run time-major (each step's rows contiguous): one transpose in, one out."""
        return ops.transpose(self.run_time_major(p, ops.transpose(x, (1, 0, 2)), rng),
                             (1, 0, 2))

    def run_time_major(self, p, x: Tensor, rng=None) -> Tensor:
        """x (T, B, input_size) -> (T, B, H)."""
        for i, names in enumerate(self.layers):
            if i and self.dropout > 0 and rng is not None:  # dropout keys on windows first
                x = ops.transpose(ops.dropout(ops.transpose(x, (1, 0, 2)), self.dropout, rng),
                                  (1, 0, 2))
            weights = [p[n] if n is not None else None for n in names]
            x = ops.recurrent(x, *weights[:4], self.cell, weights[4])
        return x

    def run_from(self, p, x: Tensor, states: list[tuple] | None) -> tuple[Tensor, list[tuple]]:
        """x (B, T, input_size) from each layer's initial state (GRU's (h0,), LSTM's
        (h0, c0); None: zeros), no dropout between layers -> every hidden state of the
        last layer (B, T, H) and each layer's final state, to hand to another stack
        (TFT's history encoder to its future encoder)."""
        x = ops.transpose(x, (1, 0, 2))
        finals, lstm = [], self.cell == "lstm"
        for i, names in enumerate(self.layers):
            weights = [p[n] if n is not None else None for n in names]
            out = ops.recurrent(x, *weights[:4], self.cell, weights[4],
                                states[i] if states else (), cell_states=lstm)
            if lstm:
                width = out.shape[2] // 2
                x = ops.index(out, (slice(None), slice(None), slice(0, width)))
                finals.append((ops.index(x, (-1,)), ops.index(out, (-1, slice(None),
                                                                    slice(width, None)))))
            else:
                x = out
                finals.append((ops.index(x, (-1,)),))
        return ops.transpose(x, (1, 0, 2)), finals

    def decode(self, p, x: np.ndarray, steps: int, next_input, repeat: int = 1) -> np.ndarray:
        """Recursive decoding (inference, arrays): read x (T, B, input_size) from a zero
        state, then take `steps` single steps from the carried states, the input of each
        made by `next_input(step, last output (B, H))`; the sequence is never read again.
        repeat > 1 continues each window's states as `repeat` consecutive rows (sample
        paths: B * repeat rows after the sequence). Returns the last layer's output after
        the sequence and after each step (steps + 1, B * repeat, H)."""
        weights = [[p[n].data if n is not None else None for n in names]
                   for names in self.layers]
        states = []
        for w_ih, w_hh, b_ih, b_hh, w_hr in weights:
            x, state = ops.recurrent_final_state(x, w_ih, w_hh, b_ih, b_hh, self.cell, w_hr)
            states.append(tuple(np.repeat(s, repeat, axis=0) for s in state))
        outputs = [np.repeat(x[-1], repeat, axis=0)]
        for step in range(steps):
            inp = next_input(step, outputs[-1])
            for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(weights):
                _, states[k] = ops.recurrent_final_state(inp[None], w_ih, w_hh, b_ih, b_hh,
                                                         self.cell, w_hr, states[k])
                inp = states[k][0]
            outputs.append(inp)
        return np.stack(outputs)


class CausalConvStack:
    """NeuralForecast's TemporalConvolutionEncoder: per dilation a causal dilated Conv1d
    (left padding (K - 1) * dilation, chomped) and an activation. Weights (K, C_in, C_out)."""

    def __init__(self, spec: ParameterSpec, name: str, in_channels: int, out_channels: int,
                 kernel_size: int, dilations: list[int], activation: str):
        self.layers = []
        for i, dilation in enumerate(dilations):
            bound = 1 / np.sqrt(in_channels * kernel_size)  # PyTorch's Conv1d initialization
            prefix = f"{name}.tcn.{i}.conv"
            self.layers.append((spec.add(f"{prefix}.weight", (kernel_size, in_channels,
                                                              out_channels), "uniform", bound),
                                spec.add(f"{prefix}.bias", (out_channels,), "uniform", bound),
                                dilation))
            in_channels = out_channels
        self.activation = activation

    def __call__(self, p, x: Tensor) -> Tensor:
        """x (B, T, C_in) -> (B, T, C_out)."""
        for weight, bias, dilation in self.layers:
            x = ops.activation(ops.causal_conv1d(x, p[weight], p[bias], dilation), self.activation)
        return x


class ContextDecoder:
    """NeuralForecast's TCN and DilatedRNN head: a linear context adapter over time (L
    steps to h), the horizon's future exogenous values beside it, and the MLP decoder."""

    def __init__(self, spec: ParameterSpec, input_size: int, h: int, channels: int,
                 futr_size: int, out_features: int, hidden_size: int, num_layers: int,
                 activation: str):
        self.context_adapter = Linear(spec, "context_adapter", input_size, h)
        self.decoder = MLPDecoder(spec, "mlp_decoder", channels + futr_size, out_features,
                                  hidden_size, num_layers, activation)
        self.input_size = input_size

    def __call__(self, p, hidden: Tensor, futr_exog: np.ndarray | Tensor | None) -> Tensor:
        """hidden (B, C, L), futr_exog (B, L + h, F) or None -> (B, h, out_features)."""
        context = ops.transpose(self.context_adapter(p, hidden), (0, 2, 1))  # (B, h, C)
        if futr_exog is not None:
            future = ops.index(ops.as_tensor(futr_exog), (slice(None), slice(self.input_size, None)))
            context = ops.concat([context, future], axis=2)
        return self.decoder(p, context)
