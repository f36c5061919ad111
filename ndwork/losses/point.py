"""Point and quantile losses: the model outputs the forecast itself, scaled as the
windows are; `outputsize_multiplier` outputs per horizon step, named `output_names`."""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.kernels import kernel


class Loss:
    """horizon_weight: (h,) weights of the horizon's steps in the mean (None: equal)."""

    outputsize_multiplier = 1
    output_names = [""]
    is_distribution_output = False
    kind = ""
    param = 0.0

    def __init__(self, horizon_weight=None):
        self.horizon_weight = _horizon_weight(horizon_weight)

    def __call__(self, y_hat: Tensor, batch: dict) -> Tensor:
        """The training loss of the model's output against the batch's (scaled) horizon."""
        y = batch["outsample_y"]
        return ops.point_loss(ops.reshape(y_hat, y.shape), y, self.weights(batch["outsample_mask"]),
                              self.kind, self.param)

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """Each horizon point's weight in the mean: the mask times horizon_weight."""
        if self.horizon_weight is None:
            return mask
        if len(self.horizon_weight) != mask.shape[1]:
            raise ValueError(f"horizon_weight has {len(self.horizon_weight)} entries for a "
                             f"horizon of {mask.shape[1]}; give one weight per step.")
        return mask * self.horizon_weight.astype(mask.dtype)

    def forecast(self, raw: np.ndarray, shift: np.ndarray, scale: np.ndarray,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        """Raw outputs (W, h, n) -> the output columns (W, h, len(output_names)) in the
        data's scale; quantile outputs sorted so they never cross."""
        out = raw * scale[:, None, None] + shift[:, None, None]
        return np.sort(out, axis=-1) if out.shape[-1] > 1 else out

    def value(self, y_hat: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
        """The loss of forecasts (W, h, n) in the data's scale (validation), no graph."""
        return kernel("point_loss")(self.kind, y_hat.reshape(y.shape), y, self.weights(mask),
                                    self.param)[0]

    def to_point(self, y_hat: np.ndarray) -> np.ndarray:
        """(B, h, n_outputs) -> (B, h): the point forecast a point metric compares."""
        return y_hat[..., 0]

    def num_parameters(self) -> int:
        """Entries NeuralForecast counts among the model's parameters (its quantiles)."""
        return 0

    def config(self) -> dict:
        return {"name": type(self).__name__, **self._arguments()}

    def _arguments(self) -> dict:
        if self.horizon_weight is None:
            return {}
        return {"horizon_weight": self.horizon_weight.tolist()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"{type(self).__name__}({args})"


def _horizon_weight(weight) -> np.ndarray | None:
    if weight is None:
        return None
    weight = np.asarray(weight, dtype=np.float64).reshape(-1)
    if not (np.isfinite(weight).all() and (weight >= 0).all() and weight.sum() > 0):
        raise ValueError(f"horizon_weight {weight.tolist()} must be finite, non-negative and "
                         f"not all zero.")
    return weight


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

    def __init__(self, delta: float = 1.0, horizon_weight=None):
        super().__init__(horizon_weight)
        self.param = self.delta = float(delta)

    def _arguments(self):
        return {"delta": self.delta, **super()._arguments()}


class QuantileLoss(Loss):
    kind = "quantile"

    def __init__(self, q: float, horizon_weight=None):
        super().__init__(horizon_weight)
        if not 0 < q < 1:
            raise ValueError(f"QuantileLoss q={q} must lie strictly between 0 and 1.")
        self.param = self.q = float(q)
        self.output_names = [quantile_name(self.q)]

    def _arguments(self):
        return {"q": self.q, **super()._arguments()}


def quantile_name(q: float) -> str:
    if q < 0.5:
        return f"-lo-{np.round(100 - 200 * q, 2)}"
    if q > 0.5:
        return f"-hi-{np.round(100 - 200 * (1 - q), 2)}"
    return "-median"


class MQLoss(Loss):
    """Multi-quantile loss. `level=[80, 90]` gives the median and the 80% and 90%
    intervals (NeuralForecast's columns `-median`, `-lo-90`, ..., `-hi-90`)."""

    def __init__(self, level: list[int] | None = None, quantiles: list[float] | None = None,
                 horizon_weight=None):
        super().__init__(horizon_weight)
        self.level = None if quantiles is not None else list(level or [80, 90])
        qs, names = quantile_outputs(self.level, quantiles)
        order = np.argsort(qs, kind="stable")
        self.quantiles = np.asarray(qs, dtype=np.float64)[order]
        self.output_names = [names[i] for i in order]
        self.outputsize_multiplier = len(self.quantiles)

    def num_parameters(self):
        return len(self.quantiles)

    def __call__(self, y_hat, batch):
        return ops.multi_quantile_loss(y_hat, batch["outsample_y"],
                                       self.weights(batch["outsample_mask"]), self.quantiles)

    def value(self, y_hat, y, mask):
        return kernel("mqloss")(y_hat, y, self.weights(mask), self.quantiles)[0]

    def to_point(self, y_hat):
        return y_hat[..., self.output_names.index("-median")] if "-median" in self.output_names \
            else y_hat.mean(axis=-1)

    def _arguments(self):
        args = {"level": self.level} if self.level is not None else \
            {"quantiles": self.quantiles.tolist()}
        return {**args, **super()._arguments()}


def quantile_outputs(level, quantiles) -> tuple[list[float], list[str]]:
    """NeuralForecast's quantiles and column suffixes for `level` (the median first, then
    the intervals' ends) or for explicit `quantiles`; each checked."""
    if quantiles is not None:
        qs = list(dict.fromkeys(float(q) for q in quantiles))
        if not qs or not all(0 < q < 1 for q in qs):
            raise ValueError(f"quantiles {list(quantiles)} must lie strictly between 0 and 1, "
                             f"e.g. [0.1, 0.5, 0.9].")
        return qs, [quantile_name(q) for q in qs]
    level = list(dict.fromkeys(level))
    if not level or not all(0 < lv < 100 for lv in level):
        raise ValueError(f"level {level} must lie strictly between 0 and 100, e.g. [80, 90].")
    pairs = sorted((50 + side * lv / 2, f"-{'lo' if side < 0 else 'hi'}-{lv}")
                   for lv in level for side in (-1, 1))
    return [0.5] + [q / 100 for q, _ in pairs], ["-median"] + [n for _, n in pairs]
