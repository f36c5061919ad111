"""TSMixerx: TSMixer with historical, future and static exogenous variables, mixing in
a ff_dim-wide feature space after projecting the inputs onto the horizon."""


from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.multivariate import RevIN, exog_series_last, per_window, series_last, series_outputs


class TemporalMixing:
    """x (W, h, C) -> LayerNorm over (h, C) of x + dropout(relu(Linear over time))."""

    def __init__(self, spec, name, channels, h, dropout):
        self.temporal_norm = LayerNorm(spec, f"{name}.temporal_norm", (h, channels))
        self.temporal_lin = Linear(spec, f"{name}.temporal_lin", h, h)
        self.dropout = dropout

    def __call__(self, p, x, rng):
        t = ops.transpose(self.temporal_lin(p, ops.transpose(x, (0, 2, 1)), "relu"), (0, 2, 1))
        return self.temporal_norm(p, ops.add(ops.dropout(t, self.dropout, rng), x))


class FeatureMixing:
    """x (W, h, C_in) -> LayerNorm over (h, C_out) of the two-layer MLP over features
    plus x (through a linear projection when C_in != C_out)."""

    def __init__(self, spec, name, in_features, out_features, h, dropout, ff_dim):
        self.feature_lin_1 = Linear(spec, f"{name}.feature_lin_1", in_features, ff_dim)
        self.feature_lin_2 = Linear(spec, f"{name}.feature_lin_2", ff_dim, out_features)
        self.project_residual = (Linear(spec, f"{name}.project_residual", in_features,
                                        out_features) if in_features != out_features else None)
        self.feature_norm = LayerNorm(spec, f"{name}.feature_norm", (h, out_features))
        self.dropout = dropout

    def __call__(self, p, x, rng):
        y = ops.dropout(self.feature_lin_1(p, x, "relu"), self.dropout, rng)
        y = ops.dropout(self.feature_lin_2(p, y), self.dropout, rng)
        if self.project_residual:
            x = self.project_residual(p, x)
        return self.feature_norm(p, ops.add(y, x))


class MixingLayer:
    """Temporal then feature mixing; with static variables (`stat_size` > 0) their
    feature-mixed copy is concatenated first, as NeuralForecast's
    MixingLayerWithStaticExogenous."""

    def __init__(self, spec, name, in_features, out_features, h, dropout, ff_dim,
                 stat_size=0):
        self.feature_mixer_stat = (FeatureMixing(spec, f"{name}.feature_mixer_stat", stat_size,
                                                 ff_dim, h, dropout, ff_dim)
                                   if stat_size else None)
        self.temporal_mixer = TemporalMixing(spec, f"{name}.temporal_mixer", in_features, h,
                                             dropout)
        self.feature_mixer = FeatureMixing(spec, f"{name}.feature_mixer", in_features,
                                           out_features, h, dropout, ff_dim)

    def __call__(self, p, x, rng, stat=None):
        if self.feature_mixer_stat:
            x = ops.concat([x, self.feature_mixer_stat(p, stat, rng)], axis=2)
        return self.feature_mixer(p, self.temporal_mixer(p, x, rng), rng)


class TSMixerx(BaseModel):
    """TSMixerx (Chen et al., 2023), multivariate: n_series series, with
    historical, future and static exogenous variables.

    n_block mixing layers, ff_dim (the feature space's width), dropout, revin
    (reversible instance normalization of the target with a learnt affine map per
    series). Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = True
    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, n_block: int = 2,
                 ff_dim: int = 64, dropout: float = 0.0, revin: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n = n_series_option(n_series)
        self.n_block, self.ff_dim, self.dropout, self.revin = n_block, ff_dim, dropout, revin
        spec = self.spec
        futr, hist, stat = self.futr_exog_size, self.hist_exog_size, self.stat_exog_size
        self.norm = RevIN(spec, "norm", n) if revin else None
        self.temporal_projection = Linear(spec, "temporal_projection", input_size, h)
        self.feature_mixer_hist = FeatureMixing(spec, "feature_mixer_hist", n * (1 + hist + futr),
                                                ff_dim, h, dropout, ff_dim)
        self.feature_mixer_futr = (FeatureMixing(spec, "feature_mixer_futr", n * futr, ff_dim, h,
                                                 dropout, ff_dim) if futr else None)
        self.feature_mixer_stat = (FeatureMixing(spec, "feature_mixer_stat", n * stat, ff_dim, h,
                                                 dropout, ff_dim) if stat else None)
        streams = 1 + bool(futr) + bool(stat)
        self.first_mixing = MixingLayer(spec, "first_mixing", streams * ff_dim, ff_dim, h,
                                        dropout, ff_dim)
        self.mixing_block = [MixingLayer(spec, f"mixing_block.{i}",
                                         2 * ff_dim if stat else ff_dim, ff_dim, h, dropout,
                                         ff_dim, n * stat) for i in range(n_block)]
        self.out = Linear(spec, "out", ff_dim, self.n_outputs * n)

    def forward(self, p, batch, rng=None):
        n, h, length = self.n_series, self.h, self.input_size
        x = series_last(batch["insample_y"], n)  # (W, L, N)
        w = x.shape[0]
        if self.norm:
            x, stats = self.norm.norm(p, x)
        channels = [ops.reshape(x, (w, 1, length, n))]
        if self.hist_exog_size:
            channels.append(exog_series_last(batch["hist_exog"], n))
        if self.futr_exog_size:
            futr = exog_series_last(batch["futr_exog"], n)  # (W, F, L + h, N)
            channels.append(ops.index(futr, (slice(None), slice(None), slice(0, length))))
        x = ops.transpose(ops.concat(channels, axis=1), (0, 1, 3, 2))  # (W, C, N, L)
        x = ops.transpose(self.temporal_projection(p, x), (0, 3, 1, 2))  # (W, h, C, N)
        x = self.feature_mixer_hist(p, ops.reshape(x, (w, h, -1)), rng)
        parts = [x]
        if self.futr_exog_size:
            future = ops.transpose(ops.index(futr, (slice(None), slice(None), slice(length, None))),
                                   (0, 2, 1, 3))
            parts.append(self.feature_mixer_futr(p, ops.reshape(future, (w, h, -1)), rng))
        stat = None
        if self.stat_exog_size:  # each window's (N * S) statics, repeated over the horizon
            stat = ops.reshape(per_window(batch["stat_exog"], n), (w, 1, -1))
            stat = ops.broadcast(stat, (w, h, stat.shape[2]))
            parts.append(self.feature_mixer_stat(p, stat, rng))
        x = self.first_mixing(p, ops.concat(parts, axis=2), rng)
        for layer in self.mixing_block:
            x = layer(p, x, rng, stat)
        y = self.out(p, x)  # (W, h, N * Q)
        if self.norm:
            y = self.norm.denorm(p, ops.reshape(y, (w, h * self.n_outputs, n)), stats)
        return series_outputs(ops.reshape(y, (w, h, -1)), n, self.n_outputs)
