"""DeepNPTS: an MLP that reads the input window (and exogenous values) and outputs, for
every horizon step, softmax weights over the input steps; the forecast is the weighted
mean of the observed values (NeuralForecast's DeepNPTS, Rangapuram et al. 2023)."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import BatchNorm, Linear


class DeepNPTS(BaseModel):
    """Deep non-parametric time-series forecaster (NeuralForecast's DeepNPTS).

    hidden_size, n_layers: the MLP (each layer Linear -> ReLU -> BatchNorm if batch_norm
    -> dropout). Its output, (input_size x h) scores, is a softmax over the input steps
    per horizon step; the forecast is that mixture's mean of the (scaled) input values, so
    it stays inside their range. A point loss only, as in NeuralForecast 3.3 (MAE by
    default); conformal intervals give it intervals. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    DEFAULTS = dict(num_lr_decays=3, inference_windows_batch_size=1024, scaler_type="standard")

    def __init__(self, h: int, input_size: int, hidden_size: int = 32, batch_norm: bool = True,
                 dropout: float = 0.1, n_layers: int = 2, **kwargs):
        if kwargs.get("exclude_insample_y"):
            raise ValueError("DeepNPTS forecasts a mixture of its inputs: "
                             "exclude_insample_y=True is not possible (as in NeuralForecast).")
        super().__init__(h, input_size, **kwargs)
        for name in ("loss", "valid_loss"):
            loss = getattr(self, name)
            if loss is not None and (loss.outputsize_multiplier > 1 or loss.is_distribution_output):
                raise ValueError(f"DeepNPTS takes a point {name} (MAE, MSE, ...), as in "
                                 f"NeuralForecast, not {loss!r}; for intervals fit with "
                                 f"prediction_intervals=PredictionIntervals().")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1).")
        self.hidden_size, self.batch_norm, self.dropout = hidden_size, batch_norm, dropout
        self.n_layers = n_layers
        in_features = (input_size * (1 + self.futr_exog_size + self.hist_exog_size)
                       + self.stat_exog_size + h * self.futr_exog_size)
        self.layers, self.norms = [], []  # declared in NeuralForecast's order
        for i in range(n_layers):
            self.layers.append(Linear(self.spec, f"deepnptsnetwork.{i}",
                                      in_features if i == 0 else hidden_size, hidden_size))
            if batch_norm:
                self.norms.append(BatchNorm(self.spec, f"deepnptsnetwork.norm{i}", hidden_size))
        self.out = Linear(self.spec, "deepnptsnetwork.out", hidden_size, input_size * h)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        b, L = y.shape
        steps = [ops.reshape(y, (b, L, 1))]  # per input step: [y | futr | hist]
        if batch["futr_exog"] is not None:
            steps.append(ops.index(ops.as_tensor(batch["futr_exog"]), (slice(None), slice(None, L))))
        if batch["hist_exog"] is not None:
            steps.append(ops.as_tensor(batch["hist_exog"]))
        x = ops.reshape(ops.concat(steps, axis=2), (b, -1))
        extra = []
        if batch["stat_exog"] is not None:
            extra.append(ops.as_tensor(batch["stat_exog"]))
        if batch["futr_exog"] is not None:
            future = ops.index(ops.as_tensor(batch["futr_exog"]), (slice(None), slice(L, None)))
            extra.append(ops.reshape(future, (b, -1)))
        if extra:
            x = ops.concat([x, *extra], axis=1)
        for i, layer in enumerate(self.layers):
            x = layer(p, x, "relu")
            if self.batch_norm:
                x = self.norms[i](p, x, training=rng is not None)
            x = ops.dropout(x, self.dropout, rng)
        scores = ops.reshape(self.out(p, x), (b, L, self.h))
        weights = ops.activation(ops.transpose(scores, (0, 2, 1)), "softmax")  # over inputs
        forecast = ops.matmul(weights, ops.reshape(y, (b, L, 1)))  # (B, h, 1)
        return forecast
