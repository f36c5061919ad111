"""MLPMultivariate: one MLP over the windows of all series at once."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import Linear
from ndwork.nn.multivariate import exog_series_last, per_window, series_last, series_outputs


class MLPMultivariate(BaseModel):
    """NeuralForecast's MLPMultivariate: the n_series series' inputs (target,
    historical and future exogenous values, statics) flattened into one vector, then
    num_layers Linear + ReLU of hidden_size and a Linear to h values per series.
    Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, num_layers: int = 2,
                 hidden_size: int = 1024, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n = n_series_option(n_series)
        self.num_layers, self.hidden_size = num_layers, hidden_size
        first = n * (input_size + self.hist_exog_size * input_size
                     + self.futr_exog_size * (input_size + h) + self.stat_exog_size)
        sizes = [first] + [hidden_size] * num_layers
        self.mlp = [Linear(self.spec, f"mlp.{i}", a, b)
                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]
        self.out = Linear(self.spec, "out", hidden_size, h * self.n_outputs * n)

    def forward(self, p, batch, rng=None):
        n = self.n_series
        x = series_last(batch["insample_y"], n)
        w = x.shape[0]
        parts = [ops.reshape(x, (w, -1))]
        for stream in ("hist", "futr"):
            if getattr(self, f"{stream}_exog_size"):
                parts.append(ops.reshape(exog_series_last(batch[f"{stream}_exog"], n), (w, -1)))
        if self.stat_exog_size:
            parts.append(ops.reshape(per_window(batch["stat_exog"], n), (w, -1)))
        x = ops.concat(parts, axis=1)
        for layer in self.mlp:
            x = layer(p, x, "relu")
        y = self.out(p, x)
        return series_outputs(ops.reshape(y, (w, self.h, -1)), n, self.n_outputs)
