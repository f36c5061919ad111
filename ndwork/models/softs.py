"""SOFTS: series embedded as tokens, mixed through the STAR aggregate-redistribute
module (a pooled core of all series, concatenated back to each) instead of attention."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.multivariate import instance_denorm, instance_statistics, per_window, series_outputs
from ndwork.nn.transformer import FeedForward, sinusoidal_positions


class STAD:
    """STAR, x (W, N, D) -> (W, N, D): a core gen2(gelu(gen1(x))) (W, N, d_core) pooled
    over the series (training: one series drawn per core channel from the softmax over
    series, NeuralForecast's stochastic pooling; inference: the softmax-weighted mean),
    concatenated back to each series and mapped by gen4(gelu(gen3(.))).
    `pe_keep_prob` given (SOFTSSharp's STADSharp): a learnt scale of a sinusoidal
    encoding of the series' positions is added first (in training with that
    probability, in inference scaled by it), with dropout after gen1, the pooling and
    gen3."""

    def __init__(self, spec, name, d_series, d_core, dropout=0.0, pe_keep_prob=None):
        self.pe_scale = (spec.add(f"{name}.pe_scale", (1,), "constant", 1.0)
                         if pe_keep_prob is not None else None)
        self.gen1 = Linear(spec, f"{name}.gen1", d_series, d_series)
        self.gen2 = Linear(spec, f"{name}.gen2", d_series, d_core)
        self.gen3 = Linear(spec, f"{name}.gen3", d_series + d_core, d_series)
        self.gen4 = Linear(spec, f"{name}.gen4", d_series, d_series)
        self.pe_keep_prob = pe_keep_prob
        self.dropout = dropout if pe_keep_prob is not None else 0.0

    def __call__(self, p, x, rng):
        w, n, d = x.shape
        if self.pe_scale is not None:
            x = self._add_positions(p, x, rng)
        core = self.gen2(p, ops.dropout(ops.activation(self.gen1(p, x), "gelu"), self.dropout,
                                        rng))
        if rng is not None:
            weights = ops.constant(self._draw(core.data, rng))
        else:  # softmax over the series
            weights = ops.transpose(ops.activation(ops.transpose(core, (0, 2, 1)), "softmax"),
                                    (0, 2, 1))
        pooled = ops.reshape(ops.total(ops.mul(core, weights), axis=1), (w, 1, -1))
        pooled = ops.broadcast(pooled, (w, n, pooled.shape[2]))
        pooled = ops.dropout(pooled, self.dropout, rng)
        mixed = ops.activation(self.gen3(p, ops.concat([x, pooled], axis=2)), "gelu")
        return self.gen4(p, ops.dropout(mixed, self.dropout, rng))

    def _add_positions(self, p, x, rng):
        if rng is not None and not rng.coin(self.pe_keep_prob):
            return x
        scale = p[self.pe_scale] if rng is not None else ops.mul(
            p[self.pe_scale], ops.constant(np.asarray([self.pe_keep_prob], x.data.dtype)))
        positions = ops.constant(sinusoidal_positions(x.shape[1], x.shape[2]))
        return ops.add(x, ops.mul(positions, scale))

    @staticmethod
    def _draw(core: np.ndarray, rng) -> np.ndarray:
        """One-hot (W, N, d_core): per window and core channel the series drawn from the
        softmax over series (NaNs as zeros, as torch.nan_to_num)."""
        logits = np.nan_to_num(core.transpose(0, 2, 1))  # (W, D, N): series last
        probs = np.exp(logits - logits.max(axis=2, keepdims=True))
        cdf = np.cumsum(probs, axis=2)
        u = rng.uniform((core.shape[0], core.shape[2]))[:, :, None] * cdf[:, :, -1:]
        drawn = np.minimum((cdf < u).sum(axis=2), core.shape[1] - 1)  # (W, D)
        return (np.arange(core.shape[1])[None, :, None] == drawn[:, None, :]).astype(core.dtype)


class STADLayer:
    """NeuralForecast's TransEncoderLayer with STAD in attention's place: x = norm1(x +
    dropout(STAD(x))); norm2(x + feed-forward(x)), gelu."""

    def __init__(self, spec, name, hidden_size, d_core, d_ff, dropout, pe_keep_prob=None):
        self.attention = STAD(spec, f"{name}.attention", hidden_size, d_core, dropout,
                              pe_keep_prob)
        self.ffn = FeedForward(spec, name, hidden_size, d_ff, "gelu", dropout)
        self.norm1 = LayerNorm(spec, f"{name}.norm1", hidden_size)
        self.norm2 = LayerNorm(spec, f"{name}.norm2", hidden_size)
        self.dropout = dropout

    def __call__(self, p, x, rng):
        x = self.norm1(p, ops.add(x, ops.dropout(self.attention(p, x, rng), self.dropout, rng)))
        return self.norm2(p, ops.add(x, self.ffn(p, x, rng)))


class SOFTS(BaseModel):
    """SOFTS (Han et al., 2024), multivariate: n_series aligned series.

    hidden_size (each series' token), d_core (STAR's pooled core), e_layers, d_ff
    (feed-forward width), dropout, use_norm (normalize each series' window by its mean
    and deviation). Training options: see `BaseModel`.
    """

    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)
    pe_keep_prob = None  # SOFTSSharp's positional encodings

    def __init__(self, h: int, input_size: int, n_series: int, hidden_size: int = 512,
                 d_core: int = 512, e_layers: int = 2, d_ff: int = 2048, dropout: float = 0.1,
                 use_norm: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n_series_option(n_series)
        self.hidden_size, self.d_core, self.e_layers, self.d_ff = hidden_size, d_core, e_layers, d_ff
        self.dropout, self.use_norm = dropout, use_norm
        spec = self.spec
        self.embedding = Linear(spec, "enc_embedding.value_embedding", input_size, hidden_size)
        self.encoder = [STADLayer(spec, f"encoder.attn_layers.{i}", hidden_size, d_core, d_ff,
                                  dropout, self.pe_keep_prob) for i in range(e_layers)]
        self.projection = Linear(spec, "projection", hidden_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        n = self.n_series
        y = batch["insample_y"].data  # (W * N, L)
        if self.use_norm:
            stats = instance_statistics(y, axis=1)
            y = (y - stats[0]) / stats[1]
        x = ops.dropout(self.embedding(p, per_window(y, n)), self.dropout, rng)  # (W, N, D)
        for layer in self.encoder:
            x = layer(p, x, rng)
        out = self.projection(p, x)  # (W, N, h * Q)
        if self.use_norm:
            out = instance_denorm(out, stats, n)
        out = ops.transpose(out, (0, 2, 1))  # NeuralForecast's (W, h * Q, N)
        return series_outputs(ops.reshape(out, (out.shape[0], self.h, -1)), n, self.n_outputs)
