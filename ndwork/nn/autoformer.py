"""The decomposition transformer Autoformer and FEDformer share (NeuralForecast builds
both from the same layers): every sub-layer's output is split into a seasonal part,
which flows on, and a moving-average trend, which the decoder accumulates into the
forecast. Only the attention differs (auto-correlation or Fourier blocks); a model hands
in one factory per attention kind, called with the layer's parameter name."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.kernels import kernel
from ndwork.nn import LayerNorm, Linear, ParameterSpec
from ndwork.nn.decomposition import check_window, moving_average_split
from ndwork.nn.transformer import DataEmbedding, FeedForward, time_steps

Attention = Callable  # (p, x_q (B, L, C), x_kv (B, S, C), rng) -> (B, L, C)


class SeasonalLayerNorm:
    """NeuralForecast's my_Layernorm: LayerNorm over channels, then each channel's mean
    over time removed (the seasonal part has no level)."""

    def __init__(self, spec: ParameterSpec, name: str, channels: int):
        self.norm = LayerNorm(spec, f"{name}.layernorm", channels)

    def __call__(self, p, x: Tensor) -> Tensor:
        y = self.norm(p, x)
        return ops.sub(y, ops.mean(y, axis=1))


class CircularConv:
    """Conv1d over time, kernel 3, circular padding, no bias: x (B, L, C_in) ->
    (B, L, C_out), weight (3, C_in, C_out) = torch's (C_out, C_in, 3) transposed."""

    def __init__(self, spec: ParameterSpec, name: str, in_channels: int, out_channels: int):
        bound = 1 / math.sqrt(3 * in_channels)  # torch's Conv1d default
        self.weight = spec.add(f"{name}.weight", (3, in_channels, out_channels), "uniform", bound)
        self.in_channels = in_channels

    def __call__(self, p, x: Tensor) -> Tensor:
        n, rows = x.shape[1], (slice(None),)
        previous = ops.concat([ops.index(x, (*rows, slice(n - 1, n))),
                               ops.index(x, (*rows, slice(0, n - 1)))], axis=1)
        following = ops.concat([ops.index(x, (*rows, slice(1, n))),
                                ops.index(x, (*rows, slice(0, 1)))], axis=1)
        taps = ops.concat([previous, x, following], axis=2)
        return ops.matmul(taps, ops.reshape(p[self.weight], (3 * self.in_channels, -1)))


def fit_length(x: Tensor, length: int) -> Tensor:
    """x (B, S, C) cut, or padded with zeros at the end, to `length` steps: the keys and
    values of a cross-attention aligned to the queries, as NeuralForecast does."""
    b, s, c = x.shape
    if s >= length:
        return ops.index(x, (slice(None), slice(0, length)))
    return ops.concat([x, ops.constant(np.zeros((b, length - s, c), x.data.dtype))], axis=1)


class EncoderLayer:
    """x += attention(x); seasonal part; x += feed-forward(x); seasonal part."""

    def __init__(self, spec, name, attention: Attention, hidden_size, conv_hidden_size,
                 activation, dropout, window):
        self.attention = attention
        self.ffn = FeedForward(spec, name, hidden_size, conv_hidden_size, activation, dropout,
                               bias=False)
        self.dropout, self.window = dropout, window

    def __call__(self, p, x: Tensor, rng) -> Tensor:
        x = ops.add(x, ops.dropout(self.attention(p, x, x, rng), self.dropout, rng))
        x, _ = moving_average_split(x, self.window)
        x, _ = moving_average_split(ops.add(x, self.ffn(p, x, rng)), self.window)
        return x


class DecoderLayer:
    """Self-attention, cross-attention to the encoder, feed-forward, each followed by a
    decomposition; the three trends, projected to the outputs, are the layer's trend."""

    def __init__(self, spec, name, self_attention: Attention, cross_attention: Attention,
                 hidden_size, conv_hidden_size, activation, dropout, window, n_outputs):
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.ffn = FeedForward(spec, name, hidden_size, conv_hidden_size, activation, dropout,
                               bias=False)
        self.projection = CircularConv(spec, f"{name}.projection", hidden_size, n_outputs)
        self.dropout, self.window = dropout, window

    def __call__(self, p, x: Tensor, memory: Tensor, rng) -> tuple[Tensor, Tensor]:
        drop, window = self.dropout, self.window
        x, trend1 = moving_average_split(
            ops.add(x, ops.dropout(self.self_attention(p, x, x, rng), drop, rng)), window)
        x, trend2 = moving_average_split(
            ops.add(x, ops.dropout(self.cross_attention(p, x, memory, rng), drop, rng)), window)
        x, trend3 = moving_average_split(ops.add(x, self.ffn(p, x, rng)), window)
        return x, self.projection(p, ops.add(ops.add(trend1, trend2), trend3))


class DecompositionTransformer:
    """Encoder over the input window; decoder over the seasonal part of its last
    label_len steps and h zeros, its trend starting from the input's trend there and
    the input's mean over the horizon. Parameters registered in NeuralForecast's order
    (its checkpoints load by position)."""

    def __init__(self, spec: ParameterSpec, *, h: int, input_size: int, label_len: int,
                 futr_exog_size: int, hidden_size: int, conv_hidden_size: int, activation: str,
                 dropout: float, encoder_layers: int, decoder_layers: int, window: int,
                 n_outputs: int, encoder_attention: Callable[[str], Attention],
                 decoder_self_attention: Callable[[str], Attention],
                 decoder_cross_attention: Callable[[str], Attention]):
        self.h, self.input_size, self.label_len = h, input_size, label_len
        self.window = check_window(window, "MovingAvg_window")
        self.enc_embedding = DataEmbedding(spec, "enc_embedding", futr_exog_size, hidden_size,
                                           dropout, positions=False)
        self.dec_embedding = DataEmbedding(spec, "dec_embedding", futr_exog_size, hidden_size,
                                           dropout, positions=False)
        ffn = (hidden_size, conv_hidden_size, activation, dropout, window)
        self.encoder = [EncoderLayer(spec, f"encoder.attn_layers.{i}",
                                     encoder_attention(f"encoder.attn_layers.{i}.attention"),
                                     *ffn) for i in range(encoder_layers)]
        self.encoder_norm = SeasonalLayerNorm(spec, "encoder.norm", hidden_size)
        self.decoder = []
        for i in range(decoder_layers):
            name = f"decoder.layers.{i}"
            self.decoder.append(DecoderLayer(
                spec, name, decoder_self_attention(f"{name}.self_attention"),
                decoder_cross_attention(f"{name}.cross_attention"), *ffn, n_outputs))
        self.decoder_norm = SeasonalLayerNorm(spec, "decoder.norm", hidden_size)
        self.projection = Linear(spec, "decoder.projection", hidden_size, n_outputs)

    def __call__(self, p, y: np.ndarray, futr, rng) -> Tensor:
        """y (B, L) the scaled input window, futr (B, L + h, X) or None -> (B, h, outputs)."""
        label, h = self.label_len, self.h
        trend = kernel("moving_average_forward")(y, self.window)
        season = y - trend
        mean = np.broadcast_to(y.mean(axis=1, keepdims=True), (len(y), h))
        trend_init = np.concatenate([trend[:, -label:], mean], axis=1)[:, :, None]
        season_init = np.concatenate([season[:, -label:], np.zeros((len(y), h), y.dtype)], axis=1)
        x = self.enc_embedding(p, y, time_steps(futr, slice(None, self.input_size)), rng)
        for layer in self.encoder:
            x = layer(p, x, rng)
        memory = self.encoder_norm(p, x)
        x = self.dec_embedding(p, season_init, time_steps(futr, slice(-(label + h), None)), rng)
        trend = ops.constant(trend_init.astype(y.dtype))
        for layer in self.decoder:
            x, residual_trend = layer(p, x, memory, rng)
            trend = ops.add(trend, residual_trend)
        out = ops.add(trend, self.projection(p, self.decoder_norm(p, x)))
        return ops.index(out, (slice(None), slice(-h, None)))
