"""Compute kernels: each numba kernel beside its plain-numpy reference, same signature.

`kernel(name)` returns the implementation the active `Optimizations.kernels` selects;
`reference(name)` and `compiled(name)` return one side explicitly (tests, benchmarks).
"""

from ndwork.config import active
from ndwork.kernels import (
    activations,
    autocorrelation,
    convolution,
    kan,
    likelihoods,
    linear,
    losses,
    noise,
    normalization,
    optim,
    pooling,
    precision,
    recurrent,
    scalers,
    xlstm,
)

REGISTRY: dict[str, tuple] = {}
for _module in (activations, autocorrelation, convolution, kan, likelihoods, linear, losses,
                noise, normalization, optim, pooling, precision, recurrent, scalers, xlstm):
    REGISTRY.update(_module.KERNELS)


def kernel(name: str):
    """The implementation of `name` chosen by the active configuration."""
    return REGISTRY[name][0 if active().kernels == "numba" else 1]


def compiled(name: str):
    return REGISTRY[name][0]


def reference(name: str):
    return REGISTRY[name][1]
