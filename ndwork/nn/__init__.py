"""Layers: each declares its parameters in a `ParameterSpec` and applies ops to a
parameter dict, so a model's forward is a pure function of (parameters, batch)."""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor


class ParameterSpec:
    """Names, shapes and initializers of a model's trainable parameters, in order."""

    def __init__(self):
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inits: dict[str, tuple[str, float]] = {}

    def add(self, name: str, shape: tuple[int, ...], init: str, scale: float = 0.0) -> str:
        if name in self.shapes:
            raise ValueError(f"parameter {name!r} declared twice")
        self.shapes[name] = tuple(int(s) for s in shape)
        self.inits[name] = (init, scale)
        return name

    def initialize(self, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
        """Draw every parameter: "uniform" U(-scale, scale) (torch's Linear default with
        scale = 1/sqrt(fan_in)), "normal" N(0, scale), "constant" scale."""
        parts = []
        for name, shape in self.shapes.items():
            init, scale = self.inits[name]
            if init == "uniform":
                parts.append(rng.uniform(-scale, scale, size=shape).ravel())
            elif init == "normal":
                parts.append(rng.normal(0, scale, size=shape).ravel())
            else:
                parts.append(np.full(int(np.prod(shape)), scale))
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


class Linear:
    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int,
                 bias: bool = True):
        bound = 1 / np.sqrt(in_features)
        self.weight = spec.add(f"{name}.weight", (in_features, out_features), "uniform", bound)
        self.bias = spec.add(f"{name}.bias", (out_features,), "uniform", bound) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, p: dict[str, Tensor], x: Tensor, activation: str = "identity") -> Tensor:
        bias = p[self.bias] if self.bias else None
        return ops.linear(x, p[self.weight], bias, activation)


class LayerNorm:
    def __init__(self, spec: ParameterSpec, name: str, features: int):
        self.gamma = spec.add(f"{name}.weight", (features,), "constant", 1.0)
        self.beta = spec.add(f"{name}.bias", (features,), "constant", 0.0)

    def __call__(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        return ops.layernorm(x, p[self.gamma], p[self.beta])


class MLPStack:
    """NeuralForecast's block MLP: Linear(in, u0), then per unit pair Linear + activation
    (+ dropout), then Linear(last, out). Note the first Linear has no activation."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int,
                 mlp_units: list[list[int]], out_features: int, activation: str,
                 dropout: float = 0.0):
        self.first = Linear(spec, f"{name}.0", in_features, mlp_units[0][0])
        self.hidden = [Linear(spec, f"{name}.{i + 1}", a, b) for i, (a, b) in enumerate(mlp_units)]
        self.out = Linear(spec, f"{name}.out", mlp_units[-1][1], out_features)
        self.activation, self.dropout = activation, dropout

    def __call__(self, p, x: Tensor, rng=None) -> Tensor:
        x = self.first(p, x)
        for layer in self.hidden:
            x = ops.dropout(layer(p, x, self.activation), self.dropout, rng)
        return self.out(p, x)
