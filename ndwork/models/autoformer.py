"""Autoformer: a decomposition transformer whose attention is auto-correlation: the
lags at which queries and keys correlate most along time, found by FFT, and the values
rolled by those lags, weighted by the softmax of their correlations."""

import math

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn.autoformer import DecompositionTransformer, fit_length
from ndwork.nn.transformer import MultiHeadAttention, decoder_label_len


class AutoCorrelation(MultiHeadAttention):
    """NeuralForecast's AutoCorrelationLayer around AutoCorrelation.

    The correlation is averaged over heads and channels, so heads only name the
    projections here. `factor * ln(L)` lags are kept: in training the lags strongest
    over the whole batch, in inference each window's own (NeuralForecast's
    time_delay_agg_training and _inference)."""

    def __init__(self, spec, name, hidden_size, n_heads, factor):
        super().__init__(spec, name, hidden_size, n_heads)
        self.factor = factor

    def __call__(self, p, x_q, x_kv, rng):
        length = x_q.shape[1]
        q = self.query(p, x_q)
        k, v = (fit_length(proj(p, x_kv), length) for proj in (self.key, self.value))
        correlation = ops.lag_correlation(q, k)  # (B, L)
        top_k = int(self.factor * math.log(length))
        if rng is not None:
            strongest = np.argsort(-correlation.data.mean(axis=0), kind="stable")[:top_k]
            delays = np.broadcast_to(strongest, (q.shape[0], top_k))
        else:
            delays = np.argsort(-correlation.data, axis=1, kind="stable")[:, :top_k]
        scores = ops.take_rows(ops.reshape(correlation, (q.shape[0], length, 1)), delays)
        weights = ops.activation(ops.reshape(scores, delays.shape), "softmax")
        return self.out(p, ops.delay_aggregate(v, weights, np.ascontiguousarray(delays)))


class Autoformer(BaseModel):
    """Autoformer (Wu et al., 2021) as NeuralForecast builds it.

    decoder_input_size_multiplier: label_len = ceil(input_size * it). hidden_size,
    n_head, conv_hidden_size (feed-forward width, no biases), activation ("gelu" or
    "relu"), encoder_layers, decoder_layers, dropout; factor: the number of lags kept is
    int(factor * ln(length)); MovingAvg_window: the (odd) moving-average window of every
    decomposition. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_CAT = True
    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, windows_batch_size=1024,
                    inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, decoder_input_size_multiplier: float = 0.5,
                 hidden_size: int = 128, dropout: float = 0.05, factor: int = 3, n_head: int = 4,
                 conv_hidden_size: int = 32, activation: str = "gelu", encoder_layers: int = 2,
                 decoder_layers: int = 1, MovingAvg_window: int = 25, **kwargs):  # noqa: N803
        super().__init__(h, input_size, **kwargs)
        label_len = decoder_label_len(input_size, decoder_input_size_multiplier, activation)
        shortest = min(input_size, label_len + h)
        if not 1 <= int(factor * math.log(shortest)) <= shortest:
            raise ValueError(f"factor={factor} keeps int(factor * ln({shortest})) lags of the "
                             f"shortest sequence ({shortest} steps): pick a factor that keeps "
                             f"between 1 and {shortest}.")
        self.decoder_input_size_multiplier, self.hidden_size = (decoder_input_size_multiplier,
                                                                hidden_size)
        self.dropout, self.factor, self.n_head = dropout, factor, n_head
        self.conv_hidden_size, self.activation = conv_hidden_size, activation
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        self.MovingAvg_window = MovingAvg_window

        def attention(name):
            return AutoCorrelation(self.spec, name, hidden_size, n_head, factor)

        self.network = DecompositionTransformer(
            self.spec, h=h, input_size=input_size, label_len=label_len,
            futr_exog_size=self.futr_exog_size, hidden_size=hidden_size,
            conv_hidden_size=conv_hidden_size, activation=activation, dropout=dropout,
            encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            window=MovingAvg_window, n_outputs=self.n_outputs, encoder_attention=attention,
            decoder_self_attention=attention, decoder_cross_attention=attention)

    def forward(self, p, batch, rng=None):
        return self.network(p, batch["insample_y"].data, batch["futr_exog"], rng)
