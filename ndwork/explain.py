"""Attributions of a model's forecasts to its inputs, through ndwork's autodiff
(NeuralForecast 3.3's explain, which uses captum).

Each forecast step and output of each window is attributed to the window's inputs as
the model reads them (after the window scaler, whose statistics are held at the
window's own): the lags (insample_y), the future, historic and static exogenous
values (a categorical column's embedding dimensions summed back into one value).
Attributions are in the forecast's units. "IntegratedGradients" integrates the
gradient from an all-zero input to the window's (Gauss-Legendre, as captum's default),
so the attributions add up to the forecast minus the baseline forecast;
"InputXGradient" multiplies each input by its gradient.
"""

from __future__ import annotations

import numpy as np

from ndwork.autodiff.tensor import Tensor, backward
from ndwork.models.base import BaseModel
from ndwork.training.trainer import layout

EXPLAINERS = ("IntegratedGradients", "InputXGradient")
STEPS = 50  # captum's default n_steps
STREAMS = ("insample_y", "futr_exog", "hist_exog", "stat_exog")


def attributions(model: BaseModel, params: np.ndarray, batch: dict, shift: np.ndarray,
                 scale: np.ndarray, horizons: list[int], outputs: list[int], explainer: str,
                 buffers: dict | None = None) -> dict:
    """{stream: (W, len(horizons), len(outputs), *input shape)} plus
    "baseline_predictions" (W, len(horizons), len(outputs)), in the forecast's units."""
    p = layout(model).tensors(params)
    p.update(buffers if buffers is not None else model.spec.initial_buffers())
    inputs = _model_inputs(model, p, batch)
    if explainer == "InputXGradient":
        alphas, weights = np.ones(1), np.ones(1)
    else:
        nodes, weights = np.polynomial.legendre.leggauss(STEPS)
        alphas, weights = (nodes + 1) / 2, weights / 2
    totals = {k: np.zeros((len(v), len(horizons), len(outputs), *v.shape[1:]))
              for k, v in inputs.items()}
    for alpha, weight in zip(alphas, weights, strict=True):
        leaves = {k: Tensor(alpha * v, requires_grad=True) for k, v in inputs.items()}
        out = _forward(model, p, batch, leaves)
        for i, t in enumerate(horizons):
            for j, o in enumerate(outputs):
                for leaf in leaves.values():
                    leaf.grad = None
                seed = np.zeros(out.shape, out.data.dtype)
                seed[:, t, o] = scale  # d forecast / d raw output, per window
                backward(out, seed)
                for k, leaf in leaves.items():
                    if leaf.grad is not None:
                        totals[k][:, i, j] += weight * leaf.grad
    result = {k: totals[k] * inputs[k][:, None, None] for k in inputs}
    zeros = {k: Tensor(np.zeros_like(v)) for k, v in inputs.items()}
    base = _forward(model, p, batch, zeros).data[:, horizons][:, :, outputs]
    result["baseline_predictions"] = base * scale[:, None, None] + shift[:, None, None]
    return _per_column(model, result)


def _model_inputs(model: BaseModel, p: dict, batch: dict) -> dict[str, np.ndarray]:
    """The window's inputs as the model reads them (categorical columns embedded)."""
    embedded = model.embed_exog(p, batch)
    inputs = {"insample_y": np.asarray(batch["insample_y"], np.float64)}
    for stream in STREAMS[1:]:
        value = embedded.get(stream, batch[stream])
        if value is not None:
            inputs[stream] = np.asarray(getattr(value, "data", value), np.float64)
    return inputs


def _forward(model: BaseModel, p: dict, batch: dict, leaves: dict) -> Tensor:
    dtype = batch["insample_y"].dtype
    for leaf in leaves.values():
        leaf.data = leaf.data.astype(dtype, copy=False)
    inputs = {**batch, **leaves}
    return model.loss.domain_map(p, model.forward(p, inputs, None), batch, None)


def _per_column(model: BaseModel, result: dict) -> dict:
    """Each categorical column's embedding dimensions summed back into one value, the
    columns in their list's order."""
    for stream, layer in model.embeddings.items():
        key = f"{stream}_exog"
        values = result[key]
        out = np.empty(values.shape[:-1] + (len(layer.continuous) + len(layer.tables),))
        out[..., layer.continuous] = values[..., :len(layer.continuous)]
        start = len(layer.continuous)
        for pos, name in layer.tables:
            width = model.spec.shapes[name][1]
            out[..., pos] = values[..., start:start + width].sum(axis=-1)
            start += width
        result[key] = out
    return result
