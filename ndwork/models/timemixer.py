"""TimeMixer: the window at several resolutions, each decomposed into season and trend,
seasons mixed bottom-up (fine to coarse) and trends top-down, one forecast per scale."""

import math

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.decomposition import check_window, fourier_split, moving_average_split
from ndwork.nn.multivariate import RevIN, series_last, series_outputs
from ndwork.nn.transformer import sinusoidal_positions

DOWN_SAMPLING = ("avg", "max")
DECOMPOSITIONS = ("moving_avg", "dft_decomp")
# NeuralForecast's TemporalEmbedding (fixed tables, counted among its parameters; used
# only with future exogenous features, which its TimeMixer does not take)
CALENDAR_SIZES = {"hour": 24, "weekday": 7, "day": 32, "month": 13}


class MLP2:
    """Linear, GELU, Linear (torch's nn.Sequential indices 0 and 2)."""

    def __init__(self, spec, name, in_features, hidden, out_features):
        self.first = Linear(spec, f"{name}.0", in_features, hidden)
        self.second = Linear(spec, f"{name}.2", hidden, out_features)

    def __call__(self, p, x):
        return self.second(p, ops.activation(self.first(p, x), "gelu"))


class PastDecomposableMixing:
    """One TimeMixer block over the scales' embeddings [(W, T_i, d)]: decompose each,
    (channel_independence 0) map season and trend through cross_layer, mix seasons
    from fine to coarse (down-sampling MLPs over time) and trends from coarse to fine
    (up-sampling MLPs), add them (channel_independence 1: out_cross_layer and a
    residual). Its layer_norm is counted and unused, as in NeuralForecast."""

    def __init__(self, spec, name, seq_len, window, layers, d_model, d_ff, independent,
                 decomposition, moving_avg, top_k):
        self.layer_norm = LayerNorm(spec, f"{name}.layer_norm", d_model)
        self.cross_layer = None if independent else MLP2(spec, f"{name}.cross_layer", d_model,
                                                         d_ff, d_model)
        down = [seq_len // window ** i for i in range(layers + 1)]
        self.down = [MLP2(spec, f"{name}.mixing_multi_scale_season.down_sampling_layers.{i}",
                          down[i], down[i + 1], down[i + 1]) for i in range(layers)]
        up = [math.ceil(seq_len / window ** i) for i in range(layers + 1)]
        self.up = [MLP2(spec, f"{name}.mixing_multi_scale_trend.up_sampling_layers.{j}",
                        up[i + 1], up[i], up[i]) for j, i in enumerate(reversed(range(layers)))]
        self.out_cross_layer = MLP2(spec, f"{name}.out_cross_layer", d_model, d_ff, d_model)
        self.independent = independent
        self.split = ((lambda x: moving_average_split(x, moving_avg)) if decomposition == "moving_avg"
                      else (lambda x: fourier_split(x, top_k)))

    def __call__(self, p, xs):
        parts = [part for x in xs for part in self.split(x)]  # season, trend of each scale
        if self.cross_layer:
            parts = self._rowwise(p, self.cross_layer, parts)
        seasons = [ops.transpose(season, (0, 2, 1)) for season in parts[0::2]]  # (W, d, T_i)
        trends = [ops.transpose(trend, (0, 2, 1)) for trend in parts[1::2]]
        mixed = [ops.add(s, t) for s, t in zip(self._mix(p, seasons, self.down),
                                               reversed(self._mix(p, trends[::-1], self.up)),
                                               strict=True)]
        if self.independent:
            mixed = [ops.add(x, self.out_cross_layer(p, m)) for x, m in zip(xs, mixed, strict=True)]
        return mixed

    @staticmethod
    def _rowwise(p, mlp, tensors):
        """mlp over the last axis of each tensor, as one product over all their rows
        (a few large GEMMs run far faster than many small ones)."""
        width, rows = tensors[0].shape[-1], [math.prod(t.shape[:-1]) for t in tensors]
        out = mlp(p, ops.concat([ops.reshape(t, (n, width)) for t, n in zip(tensors, rows, strict=True)],
                                axis=0))
        ends = np.cumsum(rows)
        return [ops.reshape(ops.index(out, (slice(end - n, end),)), t.shape)
                for t, n, end in zip(tensors, rows, ends, strict=True)]

    @staticmethod
    def _mix(p, levels, layers):
        """levels (W, d, T_i): the first kept, each next one plus the MLP (over time) of
        the previous mixed one: NeuralForecast's MultiScaleSeasonMixing (and, on the
        reversed levels, TrendMixing). Returns them as (W, T_i, d)."""
        current = levels[0]
        out = [ops.transpose(current, (0, 2, 1))]
        for layer, level in zip(layers, levels[1:], strict=True):
            current = ops.add(level, layer(p, current))
            out.append(ops.transpose(current, (0, 2, 1)))
        return out


class TimeMixer(BaseModel):
    """TimeMixer (Wang et al., 2024), multivariate: n_series series.

    d_model, d_ff, dropout, e_layers (mixing blocks), decomp_method ("moving_avg" with
    window moving_avg, or "dft_decomp" keeping top_k frequencies), channel_independence
    (0: series are the embedding's channels; 1: each series embedded alone),
    down_sampling_layers, down_sampling_window, down_sampling_method ("avg" or "max";
    NeuralForecast's "conv" draws new random weights at every forward, so ndwork refuses
    it), use_norm (RevIN per scale), decoder_input_size_multiplier (checked as
    NeuralForecast does; it only matters with future exogenous features, which
    TimeMixer does not take). Training options: see `BaseModel`.
    """

    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, d_model: int = 32,
                 d_ff: int = 32, dropout: float = 0.1, e_layers: int = 4, top_k: int = 5,
                 decomp_method: str = "moving_avg", moving_avg: int = 25,
                 channel_independence: int = 0, down_sampling_layers: int = 1,
                 down_sampling_window: int = 2, down_sampling_method: str = "avg",
                 use_norm: bool = True, decoder_input_size_multiplier: float = 0.5, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n = n_series_option(n_series)
        label_len = int(np.ceil(input_size * decoder_input_size_multiplier))
        if not 0 < label_len < input_size:
            raise ValueError(f"decoder_input_size_multiplier={decoder_input_size_multiplier} "
                             f"must be in (0, 1).")
        if decomp_method not in DECOMPOSITIONS:
            raise ValueError(f"decomp_method={decomp_method!r} is not one of {DECOMPOSITIONS}.")
        if down_sampling_method not in DOWN_SAMPLING:
            raise ValueError(f"down_sampling_method={down_sampling_method!r}: use one of "
                             f"{DOWN_SAMPLING} (NeuralForecast's 'conv' re-draws its weights "
                             f"at every forward, so it cannot be trained or reproduced).")
        if channel_independence not in (0, 1):
            raise ValueError(f"channel_independence={channel_independence!r} must be 0 or 1.")
        if input_size // down_sampling_window ** down_sampling_layers < 1:
            raise ValueError(f"input_size={input_size} is too short for {down_sampling_layers} "
                             f"down-samplings by {down_sampling_window}.")
        if decomp_method == "moving_avg":
            check_window(moving_avg)
        self.d_model, self.d_ff, self.dropout, self.e_layers = d_model, d_ff, dropout, e_layers
        self.top_k, self.decomp_method, self.moving_avg = top_k, decomp_method, moving_avg
        self.channel_independence = channel_independence
        self.down_sampling_layers, self.down_sampling_window = down_sampling_layers, down_sampling_window
        self.down_sampling_method, self.use_norm = down_sampling_method, use_norm
        self.decoder_input_size_multiplier = decoder_input_size_multiplier
        spec, independent = self.spec, bool(channel_independence)
        self.pdm_blocks = [PastDecomposableMixing(
            spec, f"pdm_blocks.{i}", input_size, down_sampling_window, down_sampling_layers,
            d_model, d_ff, independent, decomp_method, moving_avg, top_k) for i in range(e_layers)]
        channels = 1 if independent else n
        self.token = spec.add("enc_embedding.value_embedding.tokenConv.weight",
                              (3, channels, d_model), "normal", math.sqrt(2 / (3 * channels)))
        for name, size in CALENDAR_SIZES.items():
            self.constants[f"enc_embedding.temporal_embedding.{name}_embed.emb.weight"] = \
                np.asarray(sinusoidal_positions(size, d_model))
        scales = range(down_sampling_layers + 1)
        self.normalize_layers = [RevIN(spec, f"normalize_layers.{i}", n, guarded=True)
                                 for i in scales]
        lengths = [input_size // down_sampling_window ** i for i in scales]
        self.predict_layers = [Linear(spec, f"predict_layers.{i}", lengths[i], h) for i in scales]
        self.projection_layer = Linear(spec, "projection_layer", d_model, 1 if independent else n)
        self.out_res_layers = [] if independent else [
            Linear(spec, f"out_res_layers.{i}", lengths[i], lengths[i]) for i in scales]
        self.regression_layers = [] if independent else [
            Linear(spec, f"regression_layers.{i}", lengths[i], h) for i in scales]
        self.distr_output = (Linear(spec, "distr_output", n, n * self.n_outputs)
                             if self.n_outputs > 1 else None)

    def _scales(self, x: np.ndarray) -> list[np.ndarray]:
        """x (W, L, N) and its down-samplings by down_sampling_window (floor lengths)."""
        scales, window = [x], self.down_sampling_window
        for _ in range(self.down_sampling_layers):
            last = scales[-1]
            t = last.shape[1] // window
            blocks = last[:, :t * window].reshape(last.shape[0], t, window, -1)
            scales.append(blocks.mean(axis=2) if self.down_sampling_method == "avg"
                          else blocks.max(axis=2))
        return scales

    def _embed(self, p, x):
        """NeuralForecast's TokenEmbedding: a circular convolution over time, kernel 3."""
        t = x.shape[1]
        padded = ops.concat([ops.index(x, (slice(None), slice(t - 1, t))), x,
                             ops.index(x, (slice(None), slice(0, 1)))], axis=1)
        taps = ops.concat([ops.index(padded, (slice(None), slice(k, k + t))) for k in range(3)],
                          axis=2)
        weight = p[self.token]
        return ops.linear(taps, ops.reshape(weight, (-1, weight.shape[2])), None)

    def forward(self, p, batch, rng=None):
        n, h = self.n_series, self.h
        x = series_last(batch["insample_y"], n)
        w = x.shape[0]
        inputs, stats = [], None
        for i, scale in enumerate(self._scales(x.data)):
            scale = ops.constant(scale)
            if self.use_norm:
                scale, scale_stats = self.normalize_layers[i].norm(p, scale)
                stats = stats or scale_stats
            if self.channel_independence:  # (W, T, N) -> (W * N, T, 1)
                t = scale.shape[1]
                scale = ops.reshape(ops.transpose(scale, (0, 2, 1)), (w * n, t, 1))
            inputs.append(scale)
        if self.channel_independence:
            seasons, trends = inputs, None
        else:
            seasons, trends = zip(*(moving_average_split(s, self.moving_avg) for s in inputs),
                                  strict=True)
        encoded = [ops.dropout(self._embed(p, s), self.dropout, rng) for s in seasons]
        for block in self.pdm_blocks:
            encoded = block(p, encoded)
        out = None
        for i, enc in enumerate(encoded):
            dec = ops.transpose(self.predict_layers[i](p, ops.transpose(enc, (0, 2, 1))),
                                (0, 2, 1))  # (W, h, d)
            dec = self.projection_layer(p, dec)
            if self.channel_independence:  # (W * N, h, 1) -> (W, h, N)
                dec = ops.transpose(ops.reshape(dec, (w, n, h)), (0, 2, 1))
            else:
                residual = ops.transpose(trends[i], (0, 2, 1))
                residual = self.regression_layers[i](p, self.out_res_layers[i](p, residual))
                dec = ops.add(dec, ops.transpose(residual, (0, 2, 1)))
            out = dec if out is None else ops.add(out, dec)
        if self.use_norm:
            out = self.normalize_layers[0].denorm(p, out, stats)
        if self.distr_output:
            out = self.distr_output(p, out)
        return series_outputs(out, n, self.n_outputs)
