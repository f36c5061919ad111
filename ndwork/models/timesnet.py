"""TimesNet: the embedded series folded into 2-D by each of its strongest periods (found
by FFT over the batch), each fold convolved by inception blocks, the folds unfolded and
summed with the softmax of the periods' amplitudes as weights."""

import math

import numpy as np

from ndwork.autodiff import memo, ops
from ndwork.models.base import BaseModel
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.transformer import DataEmbedding, time_steps


class InceptionBlock:
    """NeuralForecast's Inception_Block_V1: same-padded Conv2d of sizes 1, 3, ...,
    2 * num_kernels - 1 (kaiming-normal, fan-out), averaged. The average of convolutions
    is one convolution with the average of the kernels, each zero-padded to the largest,
    so it runs as one; and a fold of R rows and P columns never reads taps R or more
    rows (P or more columns) away, so that kernel is cropped to what the fold reads."""

    def __init__(self, spec, name, in_channels, out_channels, num_kernels):
        self.name = name
        self.kernels = []
        for i in range(num_kernels):
            size = 2 * i + 1
            std = math.sqrt(2 / (out_channels * size * size))
            self.kernels.append((
                spec.add(f"{name}.kernels.{i}.weight", (size, size, in_channels, out_channels),
                         "normal", std),
                spec.add(f"{name}.kernels.{i}.bias", (out_channels,), "constant", 0.0), size))
        self.size = 2 * num_kernels - 1

    def merged(self, p):
        """The one kernel (K, K, C_in, C_out) and bias the average amounts to (made once
        per version of the weights in forecasts)."""
        def merge():
            weights = [p[w] for w, _, _ in self.kernels]
            bias = ops.centered_sum([p[b] for _, b, _ in self.kernels], weights[0].shape[3:])
            weight = ops.centered_sum(weights, (self.size, self.size, *weights[0].shape[2:]))
            scale = ops.constant(np.asarray(1 / len(self.kernels), weight.data.dtype))
            return ops.mul(weight, scale), ops.mul(bias, scale)

        return memo.derived((self.name,), merge)

    def __call__(self, x, merged):
        """x (B, R, P, C_in) -> (B, R, P, C_out)."""
        weight, bias = merged
        centre = self.size // 2
        reach = tuple(min(centre, n - 1) for n in x.shape[1:3])
        cropped = memo.derived((self.name, reach), lambda: ops.index(
            weight, tuple(slice(centre - r, centre + r + 1) for r in reach), contiguous=True))
        return ops.conv2d(x, cropped, bias)


class TimesBlock:
    """The top_k periods of x (B, T, C): T // f for the top_k frequencies f of the
    amplitude spectrum averaged over the batch and channels (f = 0 left out); each
    period's fold (zero-padded to whole periods) through inception -> GELU ->
    inception; the results weighted per window by the softmax of its amplitudes at
    those frequencies, plus x."""

    def __init__(self, spec, name, hidden_size, conv_hidden_size, num_kernels, top_k):
        self.inception = (
            InceptionBlock(spec, f"{name}.conv.0", hidden_size, conv_hidden_size, num_kernels),
            InceptionBlock(spec, f"{name}.conv.2", conv_hidden_size, hidden_size, num_kernels))
        self.top_k = top_k

    def __call__(self, p, x):
        b, t, c = x.shape
        amplitude = ops.complex_abs(ops.rfft(x, axis=1))  # (B, t // 2 + 1, C)
        strength = amplitude.data.mean(axis=(0, 2))
        top = 1 + np.argsort(-strength[1:], kind="stable")[:self.top_k]
        weights = ops.activation(ops.take(ops.reshape(ops.mean(amplitude, axis=2), (b, -1)),
                                          top, axis=1), "softmax")  # (B, k)
        merged = [block.merged(p) for block in self.inception]
        out = x
        for i, frequency in enumerate(top):
            period = t // frequency
            length = -(-t // period) * period
            folded = x if length == t else ops.concat(
                [x, ops.constant(np.zeros((b, length - t, c), x.data.dtype))], axis=1)
            folded = ops.reshape(folded, (b, length // period, period, c))
            y = ops.activation(self.inception[0](folded, merged[0]), "gelu")
            y = ops.reshape(self.inception[1](y, merged[1]), (b, length, c))
            weight = ops.reshape(ops.index(weights, (slice(None), slice(i, i + 1))), (b, 1, 1))
            out = ops.add(out, ops.mul(ops.index(y, (slice(None), slice(0, t))), weight))
        return out


class TimesNet(BaseModel):
    """TimesNet (Wu et al., 2023) as NeuralForecast builds it.

    hidden_size (embedding), conv_hidden_size (between the two inception blocks),
    top_k (periods per block), num_kernels (inception kernels 1, 3, ...,
    2 * num_kernels - 1), encoder_layers (TimesBlocks, one LayerNorm shared by all, as
    NeuralForecast's), dropout (embedding). The window is embedded, extended to
    input_size + h steps by a linear map over time, and the last h steps projected.
    Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_CAT = True
    DEFAULTS = dict(max_steps=1000, learning_rate=1e-4, windows_batch_size=64,
                    inference_windows_batch_size=256, scaler_type="standard")

    def __init__(self, h: int, input_size: int, hidden_size: int = 64, dropout: float = 0.1,
                 conv_hidden_size: int = 64, top_k: int = 5, num_kernels: int = 6,
                 encoder_layers: int = 2, **kwargs):
        super().__init__(h, input_size, **kwargs)
        steps = input_size + h
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= steps // 2:
            raise ValueError(f"top_k={top_k!r}: the FFT of input_size + h = {steps} steps has "
                             f"{steps // 2} frequencies above zero to pick periods from; pick "
                             f"top_k between 1 and {steps // 2}.")
        if isinstance(num_kernels, bool) or not isinstance(num_kernels, int) or \
                not 1 <= 2 * num_kernels - 1 <= steps:
            raise ValueError(f"num_kernels={num_kernels!r}: its largest kernel, "
                             f"2 * num_kernels - 1, must be at least 1 and fit the "
                             f"{steps} steps a fold can have at most (input_size + h); pick "
                             f"num_kernels between 1 and {(steps + 1) // 2}.")
        self.hidden_size, self.dropout, self.conv_hidden_size = hidden_size, dropout, \
            conv_hidden_size
        self.top_k, self.num_kernels, self.encoder_layers = top_k, num_kernels, encoder_layers
        spec = self.spec
        self.blocks = [TimesBlock(spec, f"model.{i}", hidden_size, conv_hidden_size,
                                  num_kernels, top_k) for i in range(encoder_layers)]
        self.enc_embedding = DataEmbedding(spec, "enc_embedding", self.futr_exog_size,
                                           hidden_size, dropout)
        self.layer_norm = LayerNorm(spec, "layer_norm", hidden_size)
        self.predict_linear = Linear(spec, "predict_linear", input_size, steps)
        self.projection = Linear(spec, "projection", hidden_size, self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data
        x = self.enc_embedding(p, y, time_steps(batch["futr_exog"], slice(None, self.input_size)),
                               rng)
        x = ops.transpose(self.predict_linear(p, ops.transpose(x, (0, 2, 1))), (0, 2, 1))
        for block in self.blocks:
            x = self.layer_norm(p, block(p, x))
        return ops.index(self.projection(p, x), (slice(None), slice(-self.h, None)))
