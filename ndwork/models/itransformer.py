"""iTransformer: each series' whole window is one token; attention mixes the series."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.transformer import EncoderLayer

NORM_EPS = 1e-5


class iTransformer(BaseModel):  # noqa: N801 (NeuralForecast's name)
    """iTransformer (Liu et al., 2024), multivariate: it trains on the windows of all
    `n_series` series at the same time offsets, so the series must be aligned.

    hidden_size, n_heads, e_layers (encoder layers), d_ff (feed-forward width), dropout,
    use_norm (normalize each series' window by its mean and deviation). d_layers and
    factor are accepted for compatibility and unused, as in NeuralForecast. Attention
    over the series tokens runs through ops.attention (flash or naive). Training
    options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = True
    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, hidden_size: int = 512,
                 n_heads: int = 8, e_layers: int = 2, d_layers: int = 1, d_ff: int = 2048,
                 factor: int = 1, dropout: float = 0.1, use_norm: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n_series_option(n_series)
        self.hidden_size, self.n_heads = hidden_size, n_heads
        self.e_layers, self.d_layers, self.d_ff, self.factor = e_layers, d_layers, d_ff, factor
        self.dropout, self.use_norm = dropout, use_norm
        spec = self.spec
        self.embedding = Linear(spec, "enc_embedding.value_embedding", input_size, hidden_size)
        self.futr_embedding = (Linear(spec, "futr_embedding", input_size + h, hidden_size)
                               if self.futr_exog_size else None)
        self.encoder = [EncoderLayer(spec, f"encoder.attn_layers.{i}", hidden_size, n_heads, d_ff,
                                     "gelu", dropout) for i in range(e_layers)]
        self.encoder_norm = LayerNorm(spec, "encoder.norm", hidden_size)
        self.projector = Linear(spec, "projector", hidden_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data  # (W * N, L): window-major rows, one per series
        n = self.n_series
        w = y.shape[0] // n
        if self.use_norm:  # statistics are constants, as torch detaches them
            means = y.mean(axis=1, keepdims=True)
            stdev = np.sqrt(((y - means) ** 2).mean(axis=1, keepdims=True) + NORM_EPS).astype(
                y.dtype)
            y = (y - means) / stdev
        tokens = ops.dropout(self.embedding(p, ops.constant(y.reshape(w, n, -1))), self.dropout,
                             rng)
        if self.futr_embedding is not None:
            futr = batch["futr_exog"]  # (W * N, L + h, F) -> one token per series and variable
            futr = futr.reshape(w, n, futr.shape[1], -1).transpose(0, 1, 3, 2).reshape(
                w, -1, futr.shape[1])
            futr_tokens = ops.dropout(self.futr_embedding(p, ops.constant(futr)), self.dropout,
                                      rng)
            tokens = ops.concat([tokens, futr_tokens], axis=1)
        for layer in self.encoder:
            tokens = layer(p, tokens, rng)
        tokens = self.encoder_norm(p, tokens)
        series = ops.index(tokens, (slice(None), slice(0, n)))
        out = ops.reshape(self.projector(p, series), (w * n, self.h, self.n_outputs))
        if self.use_norm:
            out = ops.add(ops.mul(out, ops.constant(stdev[:, :, None])),
                          ops.constant(means[:, :, None]))
        return out
