"""Adam, AdamW and SGD over a flat parameter vector, with NeuralForecast's step decay."""

from __future__ import annotations

import numpy as np

from ndwork.config import active
from ndwork.kernels import kernel

KNOWN_KWARGS = {"adam": {"betas", "eps", "weight_decay"},
                "adamw": {"betas", "eps", "weight_decay"},
                "sgd": {"momentum", "weight_decay"}}


class Optimizer:
    """Holds the optimizer's moments; `update` applies one fused in-place step."""

    def __init__(self, kind: str, size: int, kwargs: dict | None = None, dtype=None):
        kwargs = dict(kwargs or {})
        unknown = set(kwargs) - KNOWN_KWARGS[kind]
        if unknown:
            raise ValueError(f"optimizer_kwargs {sorted(unknown)} are not known for {kind!r}; "
                             f"use {sorted(KNOWN_KWARGS[kind])}.")
        self.kind, self.kwargs = kind, kwargs
        self.step = 0
        dtype = dtype or active().dtypes.param  # moments live beside the master weights
        self.buffers = {name: np.zeros(size, dtype) for name in
                        (("m", "v") if kind in ("adam", "adamw") else ("momentum",))}

    def update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        self.step += 1
        if self.kind == "sgd":
            kernel("sgd_update")(params, grads, self.buffers["momentum"], lr,
                                 self.kwargs.get("momentum", 0.0),
                                 self.kwargs.get("weight_decay", 0.0))
            return
        beta1, beta2 = self.kwargs.get("betas", (0.9, 0.999))
        weight_decay = self.kwargs.get("weight_decay", 0.01 if self.kind == "adamw" else 0.0)
        kernel("adam_update")(params, grads, self.buffers["m"], self.buffers["v"], self.step, lr,
                              beta1, beta2, self.kwargs.get("eps", 1e-8), weight_decay,
                              self.kind == "adamw")


def learning_rate(base: float, step: int, max_steps: int, num_lr_decays: int) -> float:
    """StepLR(gamma=0.5) every max_steps // num_lr_decays steps, as NeuralForecast."""
    if num_lr_decays is None or num_lr_decays <= 0:
        return base
    decay_steps = max(max_steps // num_lr_decays, 1)
    return base * 0.5 ** (step // decay_steps)
