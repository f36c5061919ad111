"""NBEATS: doubly residual stacks of MLP blocks whose outputs are coefficients of a
basis (identity, polynomial trend, Fourier seasonality). Also the bases NBEATSx uses."""

import warnings

import numpy as np

from ndwork.autodiff import ops
from ndwork.config import active
from ndwork.models.base import BaseModel, activation_name
from ndwork.nn import MLPStack


def polynomial_basis(length: int, n_terms: int) -> np.ndarray:
    """(n_terms, length): (t / length) ** i."""
    t = np.arange(length, dtype=float) / length
    return np.stack([t**i for i in range(n_terms)]).astype(active().dtypes.compute)


def seasonality_bases(harmonics: int, backcast_size: int, forecast_size: int):
    """Cosine and sine templates, (2F, backcast_size) and (2F, forecast_size)."""
    frequency = np.append(np.zeros(1), np.arange(harmonics, harmonics / 2 * forecast_size)
                          / harmonics)[None, :]
    back = -2 * np.pi * (np.arange(backcast_size)[:, None] / forecast_size) * frequency
    fore = 2 * np.pi * (np.arange(forecast_size)[:, None] / forecast_size) * frequency
    dtype = active().dtypes.compute
    return (np.concatenate([np.cos(back).T, np.sin(back).T]).astype(dtype),
            np.concatenate([np.cos(fore).T, np.sin(fore).T]).astype(dtype))


def basis_outputs(theta, backcast_basis, forecast_basis, n_outputs):
    """theta (B, P + P * Q) -> backcast (B, L), forecast (B, h, Q) through fixed bases."""
    size = backcast_basis.shape[0]
    b = theta.shape[0]
    back = ops.matmul(ops.index(theta, (slice(None), slice(0, size))), ops.constant(backcast_basis))
    coeffs = ops.reshape(ops.index(theta, (slice(None), slice(size, None))), (b, size, n_outputs))
    fore = ops.matmul(ops.transpose(coeffs, (0, 2, 1)), ops.constant(forecast_basis))  # (B, Q, h)
    return back, ops.transpose(fore, (0, 2, 1))


def identity_outputs(theta, length, h, n_outputs):
    b = theta.shape[0]
    back = ops.index(theta, (slice(None), slice(0, length)))
    fore = ops.reshape(ops.index(theta, (slice(None), slice(length, None))), (b, h, n_outputs))
    return back, fore


class NBEATS(BaseModel):
    """NBEATS (Oreshkin et al., 2020), generic ("identity") and interpretable
    ("trend", "seasonality") stacks.

    n_harmonics: seasonality harmonics. n_basis: degree of the trend polynomial.
    basis: "polynomial" (the trend basis). stack_types, n_blocks, mlp_units,
    dropout_prob_theta, activation: as in NHITS. shared_weights: blocks of a stack
    share parameters. Training options: see `BaseModel`.
    """

    DEFAULTS = dict(num_lr_decays=3)

    def __init__(self, h: int, input_size: int, n_harmonics: int = 2, n_basis: int = 2,
                 basis: str = "polynomial", stack_types: list | None = None,
                 n_blocks: list | None = None, mlp_units: list | None = None,
                 dropout_prob_theta: float = 0.0, activation: str = "ReLU",
                 shared_weights: bool = False, n_polynomials: int | None = None, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_harmonics, self.n_basis, self.basis = n_harmonics, n_basis, basis
        self.n_polynomials = n_polynomials
        if n_polynomials is not None and type(self) is NBEATS:  # NBEATSx uses it
            warnings.warn("NBEATS(n_polynomials=...) is deprecated and ignored, as in "
                          "NeuralForecast 3.3: n_basis sets the trend basis.", UserWarning,
                          stacklevel=2)
        self.stack_types = list(stack_types or ["identity", "trend", "seasonality"])
        self.n_blocks = list(n_blocks or [1, 1, 1])
        self.mlp_units = [list(u) for u in (mlp_units or 3 * [[512, 512]])]
        self.dropout_prob_theta, self.activation = dropout_prob_theta, activation
        self.shared_weights = shared_weights
        if basis != "polynomial":
            raise ValueError(f"NBEATS basis {basis!r} is not supported; use 'polynomial'.")
        if h == 1 and {"trend", "seasonality"} & set(self.stack_types):
            raise ValueError("h=1 cannot use 'trend' or 'seasonality' stacks; use 'identity'.")
        self.blocks = self._build_blocks(input_size, in_features=input_size)

    def _stack_head(self, kind: str, index: int):
        """(n_theta, basis name) of one stack; registers the fixed bases as constants."""
        q = self.n_outputs
        if kind == "identity":
            return self.input_size + q * self.h, None
        if kind == "trend":
            n_terms = self.n_basis + 1
            back, fore = polynomial_basis(self.input_size, n_terms), polynomial_basis(self.h, n_terms)
        elif kind == "seasonality":
            back, fore = seasonality_bases(self.n_harmonics, self.input_size, self.h)
        else:
            raise ValueError(f"stack type {kind!r} is not known; use identity, trend, seasonality.")
        name = f"basis.{index}"
        self.constants[f"{name}.backcast"], self.constants[f"{name}.forecast"] = back, fore
        return back.shape[0] * (q + 1), name

    def _build_blocks(self, input_size, in_features):
        blocks = []
        act = activation_name(self.activation)
        for i, kind in enumerate(self.stack_types):
            n_theta, basis = self._stack_head(kind, i)
            for j in range(self.n_blocks[i]):
                if self.shared_weights and j > 0:
                    mlp = blocks[-1][0]
                else:
                    mlp = MLPStack(self.spec, f"blocks.{i}.{j}", in_features, self.mlp_units,
                                   n_theta, act, self.dropout_prob_theta)
                blocks.append((mlp, basis))
        return blocks

    def block_inputs(self, residuals, batch):
        return residuals

    def block_outputs(self, theta, basis, batch):
        if basis is None:
            return identity_outputs(theta, self.input_size, self.h, self.n_outputs)
        return basis_outputs(theta, self.constants[f"{basis}.backcast"],
                             self.constants[f"{basis}.forecast"], self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        residuals = ops.flip(y)
        mask = ops.constant(np.ascontiguousarray(batch["insample_mask"][:, ::-1]))
        forecast = ops.reshape(ops.index(y, (slice(None), slice(-1, None))), (y.shape[0], 1, 1))
        for mlp, basis in self.blocks:
            theta = mlp(p, self.block_inputs(residuals, batch), rng)
            backcast, block_forecast = self.block_outputs(theta, basis, batch)
            residuals = ops.mul(ops.sub(residuals, backcast), mask)
            forecast = ops.add(forecast, block_forecast)
        return forecast
