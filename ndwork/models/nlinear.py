"""NLinear: one linear map of the window minus its last value, plus that value back."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import Linear


class NLinear(BaseModel):
    """NLinear (Zeng et al., 2023). Training options: see `BaseModel`."""

    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.linear = Linear(self.spec, "linear", input_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        last = ops.index(y, (slice(None), slice(-1, None)))
        out = ops.add(self.linear(p, ops.sub(y, last)), last)
        return ops.reshape(out, (y.shape[0], self.h, self.n_outputs))
