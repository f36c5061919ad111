"""NHITS: stacks of MLP blocks that each see a max-pooled input and emit a few
knots, linearly interpolated to the horizon (multi-rate hierarchical interpolation)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.nn import MLPStack


def _pool_channels(x, kernel_size: int) -> ops.Tensor:
    """Max-pool each channel of x (B, T, C) over time, flattened -> (B, ceil(T / k) * C)."""
    x = ops.as_tensor(x)
    b, t, c = x.shape
    pooled = ops.maxpool(ops.reshape(ops.transpose(x, (0, 2, 1)), (b * c, t)), kernel_size)
    return ops.reshape(ops.transpose(ops.reshape(pooled, (b, c, -1)), (0, 2, 1)), (b, -1))


class NHITS(BaseModel):
    """NHITS (Challu et al., 2023).

    stack_types: one "identity" per stack. n_blocks: blocks per stack.
    mlp_units: [[in, out], ...] hidden units of each block's MLP.
    n_pool_kernel_size: max-pool kernel per stack. n_freq_downsample: horizon
    downsampling per stack (knots = h // k). pooling_mode: "MaxPool1d".
    interpolation_mode: "linear". dropout_prob_theta: dropout in the block MLPs.
    activation: "ReLU", "Tanh" or "Sigmoid". Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    DEFAULTS = dict(num_lr_decays=3)

    def __init__(self, h: int, input_size: int, stack_types: list | None = None,
                 n_blocks: list | None = None, mlp_units: list | None = None,
                 n_pool_kernel_size: list | None = None, n_freq_downsample: list | None = None,
                 pooling_mode: str = "MaxPool1d", interpolation_mode: str = "linear",
                 dropout_prob_theta: float = 0.0, activation: str = "ReLU", **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.stack_types = list(stack_types or ["identity"] * 3)
        self.n_blocks = list(n_blocks or [1, 1, 1])
        self.mlp_units = [list(u) for u in (mlp_units or 3 * [[512, 512]])]
        self.n_pool_kernel_size = list(n_pool_kernel_size or [2, 2, 1])
        self.n_freq_downsample = list(n_freq_downsample or [4, 2, 1])
        if pooling_mode != "MaxPool1d" or interpolation_mode != "linear":
            raise ValueError("NHITS supports pooling_mode='MaxPool1d' and "
                             "interpolation_mode='linear'.")
        if any(t != "identity" for t in self.stack_types):
            raise ValueError(f"NHITS stack_types must all be 'identity', got {self.stack_types}.")
        self.pooling_mode, self.interpolation_mode = pooling_mode, interpolation_mode
        self.dropout_prob_theta, self.activation = dropout_prob_theta, activation
        act = activation_name(activation)
        self.blocks = []
        for i, n in enumerate(self.n_blocks):
            k = self.n_pool_kernel_size[i]
            n_knots = max(h // self.n_freq_downsample[i], 1)
            pooled_hist = -(-input_size // k)
            pooled_futr = -(-(input_size + h) // k)
            in_features = (pooled_hist + self.hist_exog_size * pooled_hist
                           + self.futr_exog_size * pooled_futr + self.stat_exog_size)
            for j in range(n):
                mlp = MLPStack(self.spec, f"blocks.{i}.{j}", in_features, self.mlp_units,
                               input_size + self.n_outputs * n_knots, act, dropout_prob_theta)
                self.blocks.append((mlp, k, n_knots))

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        b, length = y.shape
        residuals = ops.flip(y)
        mask = np.ascontiguousarray(batch["insample_mask"][:, ::-1])
        forecast = ops.reshape(ops.index(y, (slice(None), slice(-1, None))), (b, 1, 1))
        for mlp, k, n_knots in self.blocks:
            parts = [ops.maxpool(residuals, k)]
            if self.hist_exog_size:
                parts.append(_pool_channels(batch["hist_exog"], k))
            if self.futr_exog_size:
                parts.append(_pool_channels(batch["futr_exog"], k))
            if self.stat_exog_size:
                parts.append(ops.as_tensor(batch["stat_exog"]))
            theta = mlp(p, ops.concat(parts, axis=1), rng)
            backcast = ops.index(theta, (slice(None), slice(0, length)))
            knots = ops.reshape(ops.index(theta, (slice(None), slice(length, None))),
                                (b * self.n_outputs, n_knots))
            block_forecast = ops.transpose(
                ops.reshape(ops.interpolate(knots, self.h), (b, self.n_outputs, self.h)), (0, 2, 1))
            residuals = ops.mul(ops.sub(residuals, backcast), ops.constant(mask))
            forecast = ops.add(forecast, block_forecast)
        return forecast
