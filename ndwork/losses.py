"""Training and validation losses, named and parametrized as in NeuralForecast.

A loss maps the model output (B, h, n_outputs) and the targets (B, h) with their
mask to a scalar tensor; `outputsize_multiplier` tells the model how many outputs
per horizon step to produce and `output_names` how predict names them.
"""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.kernels import kernel


class Loss:
    outputsize_multiplier = 1
    output_names = [""]
    kind = ""
    param = 0.0

    def __call__(self, y_hat: Tensor, y: np.ndarray, mask: np.ndarray) -> Tensor:
        return ops.point_loss(ops.reshape(y_hat, y.shape), y, mask, self.kind, self.param)

    def value(self, y_hat: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
        """The loss of plain arrays (validation), no graph."""
        return kernel("point_loss")(self.kind, y_hat.reshape(y.shape), y, mask, self.param)[0]

    def to_point(self, y_hat: np.ndarray) -> np.ndarray:
        """(B, h, n_outputs) -> (B, h): the point forecast a point metric compares."""
        return y_hat[..., 0]

    def config(self) -> dict:
        return {"name": type(self).__name__, **self._arguments()}

    def _arguments(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"{type(self).__name__}({args})"


class MAE(Loss):
    kind = "mae"


class MSE(Loss):
    kind = "mse"


class MAPE(Loss):
    kind = "mape"


class SMAPE(Loss):
    kind = "smape"


class HuberLoss(Loss):
    kind = "huber"

    def __init__(self, delta: float = 1.0):
        self.param = self.delta = float(delta)

    def _arguments(self):
        return {"delta": self.delta}


class QuantileLoss(Loss):
    kind = "quantile"

    def __init__(self, q: float):
        if not 0 < q < 1:
            raise ValueError(f"QuantileLoss q={q} must lie strictly between 0 and 1.")
        self.param = self.q = float(q)
        self.output_names = [_quantile_name(self.q)]

    def _arguments(self):
        return {"q": self.q}


def _quantile_name(q: float) -> str:
    if q < 0.5:
        return f"-lo-{np.round(100 - 200 * q, 2)}"
    if q > 0.5:
        return f"-hi-{np.round(100 - 200 * (1 - q), 2)}"
    return "-median"


class MQLoss(Loss):
    """Multi-quantile loss. `level=[80, 90]` gives the median and the 80% and 90%
    intervals (NeuralForecast's columns `-median`, `-lo-90`, ..., `-hi-90`)."""

    def __init__(self, level: list[int] | None = None, quantiles: list[float] | None = None):
        if quantiles is not None:
            qs = sorted(dict.fromkeys(float(q) for q in quantiles))
            if not all(0 < q < 1 for q in qs):
                raise ValueError(f"MQLoss quantiles {quantiles} must lie strictly in (0, 1).")
            names = [_quantile_name(q) for q in qs]
            self.level = None
        else:
            level = [80, 90] if level is None else list(dict.fromkeys(level))
            if not all(0 < lv < 100 for lv in level):
                raise ValueError(f"MQLoss level {level} must lie strictly in (0, 100).")
            pairs = sorted((50 + s * lv / 2, f"-{'lo' if s < 0 else 'hi'}-{lv}")
                           for lv in level for s in (-1, 1))
            qs = [0.5] + [q / 100 for q, _ in pairs]
            names = ["-median"] + [n for _, n in pairs]
            self.level = level
        order = np.argsort(qs, kind="stable")
        self.quantiles = np.asarray(qs, dtype=np.float64)[order]
        self.output_names = [names[i] for i in order]
        self.outputsize_multiplier = len(self.quantiles)

    def __call__(self, y_hat, y, mask):
        return ops.multi_quantile_loss(y_hat, y, mask, self.quantiles)

    def value(self, y_hat, y, mask):
        return kernel("mqloss")(y_hat, y, mask, self.quantiles)[0]

    def to_point(self, y_hat):
        return y_hat[..., self.output_names.index("-median")] if "-median" in self.output_names \
            else y_hat.mean(axis=-1)

    def _arguments(self):
        if self.level is not None:
            return {"level": self.level}
        return {"quantiles": self.quantiles.tolist()}


LOSSES = {cls.__name__: cls for cls in (MAE, MSE, MAPE, SMAPE, HuberLoss, QuantileLoss, MQLoss)}


def loss_from_config(config: dict) -> Loss:
    config = dict(config)
    name = config.pop("name")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {list(LOSSES)}")
    return LOSSES[name](**config)
