"""NBEATSx: NBEATS whose blocks also read exogenous inputs, plus an "exogenous"
stack whose basis is the future exogenous variables themselves."""

from ndwork.autodiff import ops
from ndwork.models.mlp import flatten_inputs
from ndwork.models.nbeats import NBEATS


class NBEATSx(NBEATS):
    """NBEATSx (Olivares et al., 2022).

    n_polynomials: degree of the trend polynomial. Stack types: "identity", "trend",
    "seasonality", "exogenous". Other options as NBEATS; training options: `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True

    def __init__(self, h: int, input_size: int, n_harmonics: int = 2, n_polynomials: int = 2,
                 stack_types: list | None = None, n_blocks: list | None = None,
                 mlp_units: list | None = None, dropout_prob_theta: float = 0.0,
                 activation: str = "ReLU", shared_weights: bool = False, **kwargs):
        super().__init__(h, input_size, n_harmonics=n_harmonics, n_basis=n_polynomials,
                         stack_types=stack_types, n_blocks=n_blocks, mlp_units=mlp_units,
                         dropout_prob_theta=dropout_prob_theta, activation=activation,
                         shared_weights=shared_weights, n_polynomials=n_polynomials, **kwargs)

    def _build_blocks(self, input_size, in_features):
        in_features = (input_size + self.hist_exog_size * input_size
                       + self.futr_exog_size * (input_size + self.h) + self.stat_exog_size)
        return super()._build_blocks(input_size, in_features)

    def _stack_head(self, kind, index):
        if kind != "exogenous":
            return super()._stack_head(kind, index)
        n_exog = self.futr_exog_size + self.stat_exog_size
        if n_exog == 0:
            raise ValueError("an 'exogenous' stack needs futr_exog_list or stat_exog_list.")
        return 2 * n_exog, "exogenous"

    def hyperparameters(self):
        config = super().hyperparameters()
        config.pop("n_basis", None)
        config.pop("basis", None)
        return config

    def block_inputs(self, residuals, batch):
        return flatten_inputs({**batch, "insample_y": residuals}, self.hist_exog_size > 0,
                              self.futr_exog_size > 0, self.stat_exog_size > 0)

    def block_outputs(self, theta, basis, batch):
        if basis != "exogenous":
            return super().block_outputs(theta, basis, batch)
        import numpy as np

        parts = []
        if self.futr_exog_size:
            parts.append(ops.as_tensor(batch["futr_exog"]))
        if self.stat_exog_size:
            stat = ops.as_tensor(batch["stat_exog"])
            over_time = np.ones((1, self.input_size + self.h, 1), stat.data.dtype)
            parts.append(ops.mul(ops.reshape(stat, (stat.shape[0], 1, stat.shape[1])),
                                 ops.constant(over_time)))
        exog = ops.transpose(ops.concat(parts, axis=2), (0, 2, 1))  # (B, X, L + h)
        b, n = theta.shape[0], exog.shape[1]
        back_coeffs = ops.reshape(ops.index(theta, (slice(None), slice(n, None))), (b, 1, n))
        inputs = ops.index(exog, (slice(None), slice(None), slice(None, self.input_size)))
        back = ops.reshape(ops.matmul(back_coeffs, inputs), (b, self.input_size))
        coeffs = ops.reshape(ops.index(theta, (slice(None), slice(0, n))), (b, 1, n))
        future = ops.index(exog, (slice(None), slice(None), slice(self.input_size, None)))
        fore = ops.transpose(ops.matmul(coeffs, future), (0, 2, 1))  # (B, h, 1)
        if self.n_outputs > 1:
            fore = ops.mul(fore, ops.constant(np.ones((1, 1, self.n_outputs), fore.data.dtype)))
        return back, fore
