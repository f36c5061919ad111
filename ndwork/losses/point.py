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
    quantile_input = False  # IQLoss: forecasts any quantile asked for
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

    def value(self, y_hat: np.ndarray, y: np.ndarray, mask: np.ndarray,
              insample: np.ndarray | None = None) -> float:
        """The loss of forecasts (W, h, n) in the data's scale (validation), no graph;
        insample (W, L): the windows' inputs, for losses scaled by them."""
        return kernel("point_loss")(self.kind, y_hat.reshape(y.shape), y, self.weights(mask),
                                    self.param)[0]

    def to_point(self, y_hat: np.ndarray) -> np.ndarray:
        """(B, h, n_outputs) -> (B, h): the point forecast a point metric compares."""
        return y_hat[..., 0]

    def num_parameters(self) -> int:
        """Entries NeuralForecast counts among the model's parameters (its quantiles)
        that are not trained (trained ones join the model's spec in `build`)."""
        return 0

    def build(self, spec) -> None:
        """Declare the loss's own trainable parameters in the model's spec (IQLoss)."""

    def domain_map(self, p: dict, y_hat: Tensor, batch: dict, rng) -> Tensor:
        """The model's output -> the loss's input (IQLoss embeds its quantile here)."""
        return y_hat

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
    """Multi-quantile loss: the pinball losses of the quantiles, summed (as NeuralForecast
    3.3 computes it), averaged over the points. `level=[80, 90]` gives the median and
    the 80% and 90% intervals (NeuralForecast's columns `-median`, `-lo-90`, ...,
    `-hi-90`)."""

    def __init__(self, level: list[int] | None = None, quantiles: list[float] | None = None,
                 horizon_weight=None):
        super().__init__(horizon_weight)
        self.level = None if quantiles is not None else list(level or [80, 90])
        qs, names = quantile_outputs(self.level, quantiles)
        order = np.argsort(qs, kind="stable")
        self.quantiles = np.asarray(qs, dtype=np.float64)[order]
        self.output_names = [names[i] for i in order]
        # NeuralForecast's columns: as given (level's: the median first, then by quantile)
        self.column_order = np.argsort(order).tolist()
        self.outputsize_multiplier = len(self.quantiles)

    def num_parameters(self):
        return len(self.quantiles)

    def __call__(self, y_hat, batch):
        return ops.multi_quantile_loss(y_hat, batch["outsample_y"],
                                       self.weights(batch["outsample_mask"]), self.quantiles)

    def value(self, y_hat, y, mask, insample=None):
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


class _ArrayLoss(Loss):
    """A loss computed in numpy: `evaluate(y_hat (B, h, k), y (B, h), weights (B, h),
    insample (B, L) or None)` returns the value and d value / d y_hat (B, h, k)."""

    def __call__(self, y_hat, batch):
        y = batch["outsample_y"]
        value, grad = self.evaluate(y_hat.data.reshape(*y.shape, -1), y,
                                    self.weights(batch["outsample_mask"]), batch["insample_y"])
        grad = grad.reshape(y_hat.shape).astype(y_hat.data.dtype)
        return Tensor(np.asarray(value, dtype=y_hat.data.dtype), (y_hat,), lambda g: (grad * g,))

    def value(self, y_hat, y, mask, insample=None):
        return float(self.evaluate(y_hat.reshape(*y.shape, -1), y, self.weights(mask), insample)[0])

    def evaluate(self, y_hat, y, weights, insample):
        raise NotImplementedError


def _weighted(losses, grads, weights):
    """NeuralForecast's weighted mean sum(w l) / sum(w) and its gradient (0 if no weight)."""
    total = weights.sum()
    if total == 0:
        return 0.0, np.zeros_like(grads)
    live = weights != 0
    share = np.where(live, weights / total, 0.0)
    return float(np.where(live, losses * weights, 0).sum() / total), grads * share[..., None]


def _huber(x, delta):
    """Huber's function of x and its derivative."""
    small = np.abs(x) <= delta
    return (np.where(small, 0.5 * x * x, delta * (np.abs(x) - 0.5 * delta)),
            np.where(small, x, delta * np.sign(x)))


class RMSE(_ArrayLoss):
    """Root mean squared error: the square root of the (weighted) MSE."""

    def evaluate(self, y_hat, y, weights, insample):
        e = y_hat[..., 0] - y
        mse, grad = _weighted(e * e, 2 * e[..., None], weights)
        if mse == 0:
            return 0.0, np.zeros_like(y_hat)
        return float(np.sqrt(mse)), grad / (2 * np.sqrt(mse))


class MASE(_ArrayLoss):
    """Mean absolute error scaled by each window's in-sample seasonal naive error (lag
    `seasonality`), as NeuralForecast's MASE."""

    def __init__(self, seasonality: int, horizon_weight=None):
        super().__init__(horizon_weight)
        if isinstance(seasonality, bool) or not isinstance(seasonality, int) or seasonality < 1:
            raise ValueError(f"MASE(seasonality={seasonality!r}) must be a positive integer.")
        self.seasonality = seasonality

    def evaluate(self, y_hat, y, weights, insample):
        if insample is None or insample.shape[1] <= self.seasonality:
            raise ValueError(f"MASE(seasonality={self.seasonality}) needs more than "
                             f"{self.seasonality} input steps; use a longer input_size.")
        s = self.seasonality
        naive = np.abs(insample[:, s:] - insample[:, :-s]).mean(axis=1)[:, None]
        inverse = np.divide(1.0, naive, out=np.zeros_like(naive, dtype=np.float64),
                            where=naive != 0)
        e = y_hat[..., 0] - y
        return _weighted(np.abs(e) * inverse, (np.sign(e) * inverse)[..., None], weights)

    def _arguments(self):
        return {"seasonality": self.seasonality, **super()._arguments()}


class TukeyLoss(_ArrayLoss):
    """Tukey's biweight: c^2/6 (1 - (1 - (e/c)^2)^3) for |e| <= c, c^2/6 beyond, so
    outliers stop pulling. normalize: errors in units of each window's horizon standard
    deviation (+ 0.01). Two departures from NeuralForecast 3.3's formula, whose loss is
    largest at zero error (it omits the "1 -") and whose normalization is over a
    one-element axis (every error is divided by 0.01); the mean is over all points, as
    there."""

    def __init__(self, c: float = 4.685, normalize: bool = True):
        super().__init__(None)
        if not c > 0:
            raise ValueError(f"TukeyLoss(c={c}) must be positive.")
        self.c, self.normalize = float(c), bool(normalize)

    def evaluate(self, y_hat, y, weights, insample):
        mask = weights != 0
        if self.normalize:
            count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
            mean = np.where(mask, y, 0).sum(axis=1, keepdims=True) / count
            std = np.sqrt(np.where(mask, (y - mean) ** 2, 0).sum(axis=1, keepdims=True) / count)
            std = std + 1e-2
        else:
            std = np.ones((y.shape[0], 1))
        e = (y_hat[..., 0] - y) / std
        inside = (np.abs(e) <= self.c) & mask
        u = 1 - (e / self.c) ** 2
        c2 = self.c ** 2 / 6
        losses = np.where(inside, c2 * (1 - u ** 3), np.where(mask, c2, 0.0))
        grads = np.where(inside, c2 * 6 * u * u * e / self.c ** 2 / std, 0.0)
        return float(losses.mean()), (grads / losses.size)[..., None]

    def _arguments(self):
        return {"c": self.c, "normalize": self.normalize}


class HuberQLoss(_ArrayLoss):
    """Quantile loss with Huber's smoothing of each side (NeuralForecast's HuberQLoss):
    q huber(max(y - y_hat, 0)) + (1 - q) huber(max(y_hat - y, 0))."""

    def __init__(self, q: float, delta: float = 1.0, horizon_weight=None):
        super().__init__(horizon_weight)
        if not 0 < q < 1:
            raise ValueError(f"HuberQLoss q={q} must lie strictly between 0 and 1.")
        self.q, self.delta = float(q), float(delta)
        self.output_names = [f"_q{q}_d{delta}"]

    def evaluate(self, y_hat, y, weights, insample):
        e = y_hat[..., 0] - y
        under, d_under = _huber(np.maximum(-e, 0), self.delta)
        over, d_over = _huber(np.maximum(e, 0), self.delta)
        losses = self.q * under + (1 - self.q) * over
        grads = np.where(e > 0, (1 - self.q) * d_over, -self.q * d_under)
        return _weighted(losses, grads[..., None], weights)

    def _arguments(self):
        return {"q": self.q, "delta": self.delta, **super()._arguments()}


class HuberMQLoss(_ArrayLoss, MQLoss):
    """Multi-quantile loss with Huber's smoothing (NeuralForecast's HuberMQLoss): the
    sum over quantiles of huber(q max(y - y_hat, 0)) + huber((1 - q) max(y_hat - y, 0))."""

    def __init__(self, level: list[int] | None = None, quantiles: list[float] | None = None,
                 delta: float = 1.0, horizon_weight=None):
        super().__init__(level, quantiles, horizon_weight)
        self.delta = float(delta)

    def evaluate(self, y_hat, y, weights, insample):
        e = y_hat - y[..., None]
        q = self.quantiles
        under, d_under = _huber(q * np.maximum(-e, 0), self.delta)
        over, d_over = _huber((1 - q) * np.maximum(e, 0), self.delta)
        losses = (under + over).sum(axis=-1)  # summed over quantiles, as MQLoss
        grads = np.where(e > 0, (1 - q) * d_over, -q * d_under)
        return _weighted(losses, grads, weights)

    def _arguments(self):
        return {**super()._arguments(), "delta": self.delta}


class sCRPS(_ArrayLoss, MQLoss):
    """Scaled CRPS: 2 MQLoss sum(mask) / (sum |y| + 1e-5), the multi-quantile loss
    relative to the targets' size (NeuralForecast's sCRPS)."""

    def __init__(self, level: list[int] | None = None, quantiles: list[float] | None = None):
        super().__init__(level, quantiles)

    def evaluate(self, y_hat, y, weights, insample):
        mql, grad = kernel("mqloss")(np.ascontiguousarray(y_hat), y, weights, self.quantiles)
        factor = 2 * weights.sum() / (np.abs(y).sum() + 1e-5)
        return mql * factor, grad * factor


class Accuracy(_ArrayLoss):
    """The share of points forecast exactly (a metric for 0/1 series, e.g. as valid_loss
    with DistributionLoss("Bernoulli"); higher is better, and it has no gradient)."""

    def __init__(self):
        super().__init__(None)

    def evaluate(self, y_hat, y, weights, insample):
        return float(((y_hat[..., 0] == y) * (weights != 0)).mean()), np.zeros_like(y_hat)


class FreDF(_ArrayLoss):
    """(1 - alpha) MSE in time + alpha mean |rfft(y) - rfft(y_hat)| over the frequency
    bins of the horizon (NeuralForecast's FreDF)."""

    def __init__(self, alpha: float = 0.5, horizon_weight=None):
        super().__init__(horizon_weight)
        if not 0 <= alpha <= 1:
            raise ValueError(f"FreDF(alpha={alpha}) must be in [0, 1].")
        self.alpha = float(alpha)

    def evaluate(self, y_hat, y, weights, insample):
        e = y_hat[..., 0] - y
        time_loss, time_grad = _weighted(e * e, 2 * e[..., None], weights)
        spectrum = np.fft.rfft(e, axis=1)  # rfft is linear: rfft(y_hat) - rfft(y)
        size = np.abs(spectrum)
        bins = spectrum.shape[1]
        unit = np.divide(spectrum, size, out=np.zeros_like(spectrum), where=size != 0)
        # d mean|D_k| / d e_n = Re(sum_k unit_k exp(2 pi i k n / h)) / (B * bins)
        full = np.zeros((e.shape[0], e.shape[1]), dtype=complex)
        full[:, :bins] = unit
        freq_grad = np.real(np.fft.ifft(full, axis=1)) * e.shape[1] / size.size
        value = (1 - self.alpha) * time_loss + self.alpha * float(size.mean())
        return value, (1 - self.alpha) * time_grad + self.alpha * freq_grad[..., None]

    def _arguments(self):
        return {"alpha": self.alpha, **super()._arguments()}


class relMSE(Loss):
    """MSE relative to a benchmark forecast's: relMSE().metric(y, y_hat, y_benchmark).
    A metric only: training has no benchmark forecast (NeuralForecast 3.3's training
    fails with it too)."""

    metric_only = True

    def __init__(self, y_train=None, horizon_weight=None):
        super().__init__(horizon_weight)
        if y_train is not None:
            raise ValueError("relMSE(y_train=...) is deprecated in NeuralForecast and unused; "
                             "leave it out.")

    def metric(self, y: np.ndarray, y_hat: np.ndarray, y_benchmark: np.ndarray,
               mask: np.ndarray | None = None) -> float:
        mask = self.weights(np.ones_like(y) if mask is None else mask)
        mse = MSE().value
        return mse(y_hat, y, mask) / (mse(y_benchmark, y, mask) + 1e-5)
