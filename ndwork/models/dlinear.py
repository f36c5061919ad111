"""DLinear: split the window into a moving-average trend and a remainder, one linear
map each."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import Linear
from ndwork.nn.decomposition import moving_average_split


class DLinear(BaseModel):
    """DLinear (Zeng et al., 2023).

    moving_avg_window: odd length of the trend's moving average.
    Training options: see `BaseModel`.
    """

    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, moving_avg_window: int = 25, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if moving_avg_window % 2 == 0:
            raise ValueError(f"moving_avg_window={moving_avg_window} must be odd.")
        self.moving_avg_window = moving_avg_window
        self.linear_trend = Linear(self.spec, "linear_trend", input_size, h * self.n_outputs)
        self.linear_season = Linear(self.spec, "linear_season", input_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        season, trend = moving_average_split(y, self.moving_avg_window)
        out = ops.add(self.linear_trend(p, trend), self.linear_season(p, season))
        return ops.reshape(out, (y.shape[0], self.h, self.n_outputs))
