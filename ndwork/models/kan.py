"""KAN: Kolmogorov-Arnold network, B-spline functions of every input summed per output."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn.kan import KANLinear


class KAN(BaseModel):
    """NeuralForecast's KAN (univariate): the window's inputs (target, historical and
    future exogenous values, statics) through n_hidden_layers KANLinear layers of
    hidden_size (an int, or a list with one size per layer) to h outputs.

    grid_size, spline_order, grid_range (the spline grid), scale_noise, scale_base,
    scale_spline, enable_standalone_scale_spline (the initialization of the spline
    coefficients and scalers), grid_eps (accepted; it only matters to the grid updates
    NeuralForecast's training never calls). Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True

    def __init__(self, h: int, input_size: int, grid_size: int = 5, spline_order: int = 3,
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0,
                 enable_standalone_scale_spline: bool = True, grid_eps: float = 0.02,
                 grid_range: list | None = None, n_hidden_layers: int = 1,
                 hidden_size: int | list = 512, **kwargs):
        super().__init__(h, input_size, **kwargs)
        grid_range = list(grid_range) if grid_range is not None else [-1, 1]
        if isinstance(hidden_size, int):
            hidden = [hidden_size] * n_hidden_layers
        elif len(hidden_size) != n_hidden_layers:
            raise ValueError(f"hidden_size={hidden_size} must list n_hidden_layers="
                             f"{n_hidden_layers} sizes (or be one int).")
        else:
            hidden = list(hidden_size)
        if len(grid_range) != 2 or grid_range[0] >= grid_range[1]:
            raise ValueError(f"grid_range={grid_range} must be [low, high] with low < high.")
        self.grid_size, self.spline_order, self.scale_noise = grid_size, spline_order, scale_noise
        self.scale_base, self.scale_spline = scale_base, scale_spline
        self.enable_standalone_scale_spline, self.grid_eps = enable_standalone_scale_spline, grid_eps
        self.grid_range, self.n_hidden_layers, self.hidden_size = grid_range, n_hidden_layers, hidden_size
        first = (input_size + self.hist_exog_size * input_size
                 + self.futr_exog_size * (input_size + h) + self.stat_exog_size)
        sizes = [first] + hidden + [h * self.n_outputs]
        self.layers = [KANLinear(self.spec, f"layers.{i}", a, b, grid_size, spline_order,
                                 scale_noise, scale_base, scale_spline,
                                 enable_standalone_scale_spline, grid_range)
                       for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]

    def forward(self, p, batch, rng=None):
        x = batch["insample_y"]
        w = x.shape[0]
        parts = [x] + [ops.reshape(ops.as_tensor(batch[f"{s}_exog"]), (w, -1))
                       for s in ("hist", "futr", "stat") if getattr(self, f"{s}_exog_size")]
        x = ops.concat(parts, axis=1)
        for layer in self.layers:
            x = layer(p, x)
        return ops.reshape(x, (w, self.h, self.n_outputs))
