"""Adam, AdamW and SGD over a flat parameter vector, with NeuralForecast's step decay."""

from __future__ import annotations

import bisect
import math

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
        self.step = 0  # steps taken ...
        self.skipped = 0  # ... of which skipped (fp16 loss scaling): not in Adam's count
        dtype = dtype or active().dtypes.param  # moments live beside the master weights
        self.buffers = {name: np.zeros(size, dtype) for name in
                        (("m", "v") if kind in ("adam", "adamw") else ("momentum",))}

    def skip(self) -> None:
        """A step that changes nothing (its gradient overflowed under loss scaling)."""
        self.step += 1
        self.skipped += 1

    def update(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        self.step += 1
        if self.kind == "sgd":
            kernel("sgd_update")(params, grads, self.buffers["momentum"], lr,
                                 self.kwargs.get("momentum", 0.0),
                                 self.kwargs.get("weight_decay", 0.0))
            return
        beta1, beta2 = self.kwargs.get("betas", (0.9, 0.999))
        weight_decay = self.kwargs.get("weight_decay", 0.01 if self.kind == "adamw" else 0.0)
        kernel("adam_update")(params, grads, self.buffers["m"], self.buffers["v"],
                              self.step - self.skipped, lr,
                              beta1, beta2, self.kwargs.get("eps", 1e-8), weight_decay,
                              self.kind == "adamw")


def learning_rate(base: float, step: int, max_steps: int, num_lr_decays: int,
                  scheduler=None, scheduler_kwargs: dict | None = None) -> float:
    """The learning rate of a fit's step (counted from 0), stepped every training step
    as NeuralForecast steps its scheduler. Default: StepLR(gamma=0.5) every max_steps //
    num_lr_decays steps, as NeuralForecast. scheduler: one of PyTorch's schedulers by
    name (or its class) with its keyword arguments, in closed form (SCHEDULERS), or a
    callable step -> factor of the base rate (LambdaLR's lr_lambda)."""
    if scheduler is not None:
        kwargs = dict(scheduler_kwargs or {})
        if callable(scheduler) and not isinstance(scheduler, type):
            return base * float(scheduler(step))
        return SCHEDULERS[scheduler_name(scheduler)](base, step, **kwargs)
    if num_lr_decays is None or num_lr_decays <= 0:
        return base
    decay_steps = max(max_steps // num_lr_decays, 1)
    return base * 0.5 ** (step // decay_steps)


def _cosine(base, step, T_max, eta_min=0.0):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * step / T_max)) / 2


def _linear(base, step, start_factor=1 / 3, end_factor=1.0, total_iters=5):
    return base * (start_factor + (end_factor - start_factor) * min(step, total_iters)
                   / total_iters)


# PyTorch's schedulers in closed form (their chainable updates give the same rates)
SCHEDULERS = {
    "StepLR": lambda base, step, step_size, gamma=0.1: base * gamma ** (step // step_size),
    "MultiStepLR": lambda base, step, milestones, gamma=0.1: (
        base * gamma ** bisect.bisect_right(sorted(milestones), step)),
    "ExponentialLR": lambda base, step, gamma: base * gamma ** step,
    "CosineAnnealingLR": _cosine,
    "LinearLR": _linear,
    "ConstantLR": lambda base, step, factor=1 / 3, total_iters=5: (
        base * (factor if step < total_iters else 1.0)),
}


def scheduler_name(scheduler) -> str:
    """A scheduler given by name or as PyTorch's class -> its name (checked)."""
    name = scheduler if isinstance(scheduler, str) else getattr(scheduler, "__name__", "")
    if name not in SCHEDULERS:
        raise ValueError(f"lr_scheduler={scheduler!r} is not one ndwork computes; use one of "
                         f"{sorted(SCHEDULERS)} (by name or PyTorch's class) with "
                         f"lr_scheduler_kwargs, or a function step -> factor.")
    return name
