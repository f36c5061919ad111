"""Implicit quantile losses: one output per step, trained at quantiles drawn anew for
every point, so a single model answers any quantile (NeuralForecast's IQLoss and
HuberIQLoss).

The loss owns a small network (NeuralForecast's QuantileLayer and output layer): the
quantile tau is embedded as cos(pi k tau), k = 0..D-1, mapped through Linear(D, D),
PReLU, Linear(D, 1) to e(tau), and the model's output y becomes PReLU(w y (1 + e(tau)) + b).
Its parameters join the model's (`build`), so they train, save and count with it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaincinv

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor
from ndwork.losses.point import _ArrayLoss, _huber, _weighted
from ndwork.nn import Linear, ParameterSpec


class IQLoss(_ArrayLoss):
    """Implicit quantile loss. cos_embedding_dim: D of the quantile embedding.
    concentration0, concentration1: the Beta distribution training quantiles are drawn
    from (1, 1: uniform). predict() forecasts the median (column `_ql0.5`);
    predict(quantiles=[...]) or predict(level=[...]) any others: each quantile is
    forecast at that quantile, and the forecasts are sorted so they never cross.
    NeuralForecast 3.3 instead forecasts 11 fixed quantiles (0.01 ... 0.99) and takes the
    requested quantiles of those 11 values, so its 80% interval is the 5%-95% forecasts:
    about a 90% interval."""

    quantile_input = True

    def __init__(self, cos_embedding_dim: int = 64, concentration0: float = 1.0,
                 concentration1: float = 1.0, horizon_weight=None):
        super().__init__(horizon_weight)
        if isinstance(cos_embedding_dim, bool) or not isinstance(cos_embedding_dim, int) \
                or cos_embedding_dim < 1:
            raise ValueError(f"cos_embedding_dim={cos_embedding_dim!r} must be a positive "
                             f"integer.")
        if not (concentration0 > 0 and concentration1 > 0):
            raise ValueError(f"concentration0={concentration0}, concentration1={concentration1}: "
                             f"the Beta distribution's concentrations must be positive.")
        self.cos_embedding_dim = cos_embedding_dim
        self.concentration0, self.concentration1 = float(concentration0), float(concentration1)
        self.output_names = ["_ql0.5"]

    def build(self, spec: ParameterSpec) -> None:
        d = self.cos_embedding_dim
        self.embed = Linear(spec, "loss.quantile_layer.output_layer.0", d, d)
        self.embed_slope = spec.add("loss.quantile_layer.output_layer.1.weight", (1,),
                                    "constant", 0.25)
        self.project = Linear(spec, "loss.quantile_layer.output_layer.2", d, 1)
        self.out = Linear(spec, "loss.output_layer.0", 1, 1)
        self.out_slope = spec.add("loss.output_layer.1.weight", (1,), "constant", 0.25)

    def domain_map(self, p: dict, y_hat: Tensor, batch: dict, rng) -> Tensor:
        """(B, h, 1) -> (B, h, 1) at the batch's quantiles: drawn in training (and kept
        in batch["quantile"] for the loss), batch["quantile"] (default 0.5) otherwise."""
        if rng is not None:
            u = rng.uniform(y_hat.shape)
            batch["quantile"] = betaincinv(self.concentration0, self.concentration1, u)
        tau = np.broadcast_to(np.asarray(batch.get("quantile", 0.5), np.float64),
                              y_hat.shape).astype(y_hat.data.dtype)
        cosines = np.cos(tau * np.arange(self.cos_embedding_dim) * np.pi)  # (B, h, D)
        hidden = _prelu(self.embed(p, ops.constant(cosines)), p[self.embed_slope])
        embedding = self.project(p, hidden)
        scaled = ops.mul(y_hat, ops.add(embedding, ops.constant(np.ones_like(tau))))
        return _prelu(self.out(p, scaled), p[self.out_slope])

    def evaluate(self, y_hat, y, weights, insample):
        q = self._quantiles(y)
        e = y - y_hat[..., 0]
        losses = np.maximum(q * e, (q - 1) * e)
        grads = np.where(e > 0, -q, np.where(e < 0, 1 - q, 0.0))
        return _weighted(losses, grads[..., None], weights)

    def _quantiles(self, y):
        q = np.asarray(self._batch_quantile, np.float64)
        return np.broadcast_to(q.reshape(y.shape) if q.size == y.size else q, y.shape)

    def __call__(self, y_hat, batch):
        self._batch_quantile = batch.get("quantile", 0.5)
        return super().__call__(y_hat, batch)

    def value(self, y_hat, y, mask, insample=None):
        self._batch_quantile = 0.5  # validation scores the median forecast
        return super().value(y_hat, y, mask, insample)

    def _arguments(self):
        return {"cos_embedding_dim": self.cos_embedding_dim,
                "concentration0": self.concentration0, "concentration1": self.concentration1,
                **super()._arguments()}


class HuberIQLoss(IQLoss):
    """IQLoss with Huber's smoothing of each side of the quantile loss (delta)."""

    def __init__(self, cos_embedding_dim: int = 64, concentration0: float = 1.0,
                 concentration1: float = 1.0, delta: float = 1.0, horizon_weight=None):
        super().__init__(cos_embedding_dim, concentration0, concentration1, horizon_weight)
        self.delta = float(delta)

    def evaluate(self, y_hat, y, weights, insample):
        q = self._quantiles(y)
        e = y_hat[..., 0] - y
        under, d_under = _huber(np.maximum(-e, 0), self.delta)
        over, d_over = _huber(np.maximum(e, 0), self.delta)
        losses = q * under + (1 - q) * over
        grads = np.where(e > 0, (1 - q) * d_over, -q * d_under)
        return _weighted(losses, grads[..., None], weights)

    def _arguments(self):
        return {**super()._arguments(), "delta": self.delta}


def _prelu(x: Tensor, slope: Tensor) -> Tensor:
    """PReLU with one learned slope: max(x, 0) + slope min(x, 0)."""
    positive = ops.activation(x, "relu")
    return ops.add(positive, ops.mul(ops.sub(x, positive), slope))
