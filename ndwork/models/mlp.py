"""MLP: the flattened inputs through `num_layers` ReLU layers of `hidden_size` units."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import Linear


def flatten_inputs(batch: dict, hist: bool, futr: bool, stat: bool) -> ops.Tensor:
    """[y_{t-L..t} | X_{t-L..t} | F_{t-L..t+h} | S] as one (B, features) input."""
    y = batch["insample_y"]
    b = y.shape[0]
    parts = [y]
    if hist:
        parts.append(ops.reshape(ops.as_tensor(batch["hist_exog"]), (b, -1)))
    if futr:
        parts.append(ops.reshape(ops.as_tensor(batch["futr_exog"]), (b, -1)))
    if stat:
        parts.append(ops.as_tensor(batch["stat_exog"]))
    return ops.concat(parts, axis=1)


class MLP(BaseModel):
    """Multi-layer perceptron (NeuralForecast's MLP).

    num_layers: hidden layers. hidden_size: units per hidden layer.
    Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True

    def __init__(self, h: int, input_size: int, num_layers: int = 2, hidden_size: int = 1024,
                 **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.num_layers, self.hidden_size = num_layers, hidden_size
        in_features = (input_size + self.hist_exog_size * input_size
                       + self.futr_exog_size * (input_size + h) + self.stat_exog_size)
        sizes = [in_features] + [hidden_size] * num_layers
        self.layers = [Linear(self.spec, f"mlp.{i}", a, b)
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]
        self.out = Linear(self.spec, "out", hidden_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        x = flatten_inputs(batch, self.hist_exog_size > 0, self.futr_exog_size > 0,
                           self.stat_exog_size > 0)
        for layer in self.layers:
            x = layer(p, x, "relu")
        return ops.reshape(self.out(p, x), (x.shape[0], self.h, self.n_outputs))
