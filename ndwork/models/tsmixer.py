"""TSMixer: stacked MLPs that mix along time, then along series."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import BatchNorm, Linear
from ndwork.nn.multivariate import RevIN, series_last, series_outputs


class MixingLayer:
    """NeuralForecast's TSMixer mixing layer on x (W, L, N): x + dropout(relu(Linear over
    time of BatchNorm(x))), then x + dropout(Linear(dropout(relu(Linear over series of
    BatchNorm(x))))). Each BatchNorm1d normalizes all N * L cells (eps 1e-3, momentum
    0.01), the temporal one in series-major order, the feature one in time-major."""

    def __init__(self, spec, name, n_series, input_size, dropout, ff_dim):
        t, f = f"{name}.temporal_mixer", f"{name}.feature_mixer"
        self.temporal_norm = BatchNorm(spec, f"{t}.temporal_norm", n_series * input_size, 0.01,
                                       1e-3)
        self.temporal_lin = Linear(spec, f"{t}.temporal_lin", input_size, input_size)
        self.feature_norm = BatchNorm(spec, f"{f}.feature_norm", n_series * input_size, 0.01,
                                      1e-3)
        self.feature_lin_1 = Linear(spec, f"{f}.feature_lin_1", n_series, ff_dim)
        self.feature_lin_2 = Linear(spec, f"{f}.feature_lin_2", ff_dim, n_series)
        self.dropout = dropout

    def __call__(self, p, x, rng):
        w, length, n = x.shape
        training = rng is not None
        t = ops.reshape(ops.transpose(x, (0, 2, 1)), (w, n * length))
        t = ops.reshape(self.temporal_norm(p, t, training), (w, n, length))
        t = ops.transpose(self.temporal_lin(p, t, "relu"), (0, 2, 1))
        x = ops.add(x, ops.dropout(t, self.dropout, rng))
        f = ops.reshape(self.feature_norm(p, ops.reshape(x, (w, length * n)), training),
                        (w, length, n))
        f = ops.dropout(self.feature_lin_1(p, f, "relu"), self.dropout, rng)
        f = ops.dropout(self.feature_lin_2(p, f), self.dropout, rng)
        return ops.add(x, f)


class TSMixer(BaseModel):
    """TSMixer (Chen et al., 2023), multivariate: n_series series.

    n_block mixing layers, ff_dim (the feature MLP's width), dropout (0.9 by default, as
    in NeuralForecast), revin (reversible instance normalization with a learnt affine
    map per series). Training options: see `BaseModel`.
    """

    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, n_block: int = 2,
                 ff_dim: int = 64, dropout: float = 0.9, revin: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n_series_option(n_series)
        self.n_block, self.ff_dim, self.dropout, self.revin = n_block, ff_dim, dropout, revin
        spec = self.spec
        self.norm = RevIN(spec, "norm", n_series) if revin else None
        self.mixing_layers = [MixingLayer(spec, f"mixing_layers.{i}", n_series, input_size,
                                          dropout, ff_dim) for i in range(n_block)]
        self.out = Linear(spec, "out", input_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        x = series_last(batch["insample_y"], self.n_series)  # (W, L, N)
        if self.norm:
            x, stats = self.norm.norm(p, x)
        for layer in self.mixing_layers:
            x = layer(p, x, rng)
        y = ops.transpose(self.out(p, ops.transpose(x, (0, 2, 1))), (0, 2, 1))  # (W, h*Q, N)
        if self.norm:
            y = self.norm.denorm(p, y, stats)
        return series_outputs(ops.reshape(y, (y.shape[0], self.h, -1)), self.n_series,
                              self.n_outputs)

