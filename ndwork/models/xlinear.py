"""XLinear: linear embeddings of each series' window gated across time and across
series through a learnt global token."""

import warnings

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import Linear
from ndwork.nn.multivariate import instance_denorm, instance_statistics, per_window, series_outputs


class GatingBlock:
    """x * sigmoid(Linear(dropout(relu(Linear(x)))))."""

    def __init__(self, spec, name, features, hidden, dropout):
        self.first = Linear(spec, f"{name}.weight.0", features, hidden)
        self.second = Linear(spec, f"{name}.weight.3", hidden, features)
        self.dropout = dropout

    def __call__(self, p, x, rng):
        gate = ops.dropout(self.first(p, x, "relu"), self.dropout, rng)
        return ops.mul(x, self.second(p, gate, "sigmoid"))


class XLinear(BaseModel):
    """NeuralForecast's XLinear, multivariate: n_series series.

    hidden_size (each series' window embedding), temporal_ff and channel_ff (the gating
    MLPs' widths; channel_ff best a multiple of n_series), temporal_dropout,
    channel_dropout, embed_dropout, head_dropout, use_norm (normalize each series'
    window by its mean and deviation). Historical, future and static exogenous
    variables each get a linear embedding beside the series'. Training options: see
    `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, hidden_size: int = 128,
                 temporal_ff: int = 256, channel_ff: int = 8, temporal_dropout: float = 0.0,
                 channel_dropout: float = 0.0, embed_dropout: float = 0.0,
                 head_dropout: float = 0.0, use_norm: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n = n_series_option(n_series)
        if channel_ff % n:
            warnings.warn(f"XLinear(channel_ff={channel_ff}) is not a multiple of n_series={n}; "
                          f"a multiple (e.g. {2 * n}) mixes the series better.", UserWarning,
                          stacklevel=2)
        self.hidden_size, self.temporal_ff, self.channel_ff = hidden_size, temporal_ff, channel_ff
        self.temporal_dropout, self.channel_dropout = temporal_dropout, channel_dropout
        self.embed_dropout, self.head_dropout, self.use_norm = embed_dropout, head_dropout, use_norm
        spec = self.spec
        self.projection = Linear(spec, "projection.0", input_size, hidden_size)
        self.glob_token = spec.add("glob_token", (n, hidden_size), "normal", 1.0)
        self.temporal_gating = GatingBlock(spec, "temporal_gating", 2 * hidden_size, temporal_ff,
                                           temporal_dropout)
        self.channel_gating = GatingBlock(spec, "channel_gating", 2 * n, channel_ff,
                                          channel_dropout)
        self.exog = {}
        for stream, width in (("hist", self.hist_exog_size * input_size),
                              ("futr", self.futr_exog_size * (input_size + h)),
                              ("stat", self.stat_exog_size)):
            if width:
                self.exog[stream] = Linear(spec, f"{stream}_exog_projection", width, hidden_size)
        self.head = Linear(spec, "head.1", (2 + len(self.exog)) * hidden_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        n, hidden = self.n_series, self.hidden_size
        y = batch["insample_y"].data  # (W * N, L)
        if self.use_norm:
            stats = instance_statistics(y, axis=1)
            y = (y - stats[0]) / stats[1]
        emb = ops.dropout(self.projection(p, per_window(y, n)), self.embed_dropout, rng)
        w = emb.shape[0]
        glob = ops.broadcast(p[self.glob_token], (w, n, hidden))
        gated = self.temporal_gating(p, ops.concat([emb, glob], axis=2), rng)  # (W, N, 2H)
        origin = ops.index(gated, (slice(None), slice(None), slice(0, hidden)))
        glob = ops.index(gated, (slice(None), slice(None), slice(hidden, None)))
        mixed = ops.transpose(ops.concat([emb, glob], axis=1), (0, 2, 1))  # (W, H, 2N)
        glob = ops.index(self.channel_gating(p, mixed, rng), (slice(None), slice(None),
                                                               slice(n, None)))
        parts = [origin, ops.transpose(glob, (0, 2, 1))]
        for stream, layer in self.exog.items():
            x = batch[f"{stream}_exog"]  # (W * N, T, F): NeuralForecast flattens F-major
            if stream != "stat":
                x = ops.transpose(ops.as_tensor(x), (0, 2, 1))
            parts.append(layer(p, ops.reshape(per_window(x, n), (w, n, -1))))
        out = self.head(p, ops.dropout(ops.concat(parts, axis=2), self.head_dropout, rng))
        if self.use_norm:  # (W, N, h * Q) rows, each series' statistics
            out = instance_denorm(out, stats, n)
        out = ops.transpose(out, (0, 2, 1))  # NeuralForecast's (W, h * Q, N)
        return series_outputs(ops.reshape(out, (w, self.h, -1)), n, self.n_outputs)
