"""Kolmogorov-Arnold layers: learnt functions of each input as weighted sums of basis
functions, as NeuralForecast's KAN (B-splines) and RMoK (Taylor, Jacobi, wavelet
experts) define them. The bases are kernels (ndwork.kernels.kan) that return their
values and derivatives together; ops.expand applies them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from ndwork.autodiff import ops
from ndwork.kernels import kernel
from ndwork.kernels.kan import WAVELETS
from ndwork.nn import BatchNorm, Linear, ParameterSpec


def silu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x sigmoid(x) and its derivative (the sigmoid without overflow)."""
    sig = expit(x)
    return x * sig, sig * (1 + x * (1 - sig))


def _kaiming_uniform_bound(fan_in: int, a: float) -> float:
    """torch's kaiming_uniform_ bound for leaky-ReLU slope a."""
    return math.sqrt(6 / ((1 + a * a) * fan_in))


class KANLinear:
    """NeuralForecast's KANLinear, x (R, I) -> (R, O): base_weight applied to silu(x)
    plus, per input, a spline of grid_size intervals over grid_range (extended by
    spline_order knots each side) with coefficients spline_weight times a standalone
    spline_scaler. Weights are stored (K, I, O) and (I, O) where torch's are (O, I, K)
    and (O, I); spline_scaler keeps torch's (O, I)."""

    def __init__(self, spec: ParameterSpec, name: str, in_features: int, out_features: int,
                 grid_size: int = 5, spline_order: int = 3, scale_noise: float = 0.1,
                 scale_base: float = 1.0, scale_spline: float = 1.0,
                 standalone_scale_spline: bool = True, grid_range=(-1, 1)):
        step = (grid_range[1] - grid_range[0]) / grid_size
        self.grid = np.arange(-spline_order, grid_size + spline_order + 1) * step + grid_range[0]
        self.order = spline_order
        k = grid_size + spline_order
        self.base_weight = spec.add(f"{name}.base_weight", (in_features, out_features), "uniform",
                                    _kaiming_uniform_bound(in_features, math.sqrt(5) * scale_base))

        def spline_init(rng):  # least-squares splines through small noise at the grid points
            noise = (rng.uniform(size=(grid_size + 1, in_features, out_features)) - 0.5) \
                * scale_noise / grid_size
            points = np.repeat(self.grid[spline_order:-spline_order, None], in_features, axis=1)
            basis = kernel("bspline_basis")(points, self.grid, spline_order)[0].transpose(1, 0, 2)
            coeffs = np.stack([np.linalg.lstsq(basis[i], noise[:, i], rcond=None)[0]
                               for i in range(in_features)], axis=1)  # (K, I, O)
            return coeffs * (1.0 if standalone_scale_spline else scale_spline)

        self.spline_weight = spec.add(f"{name}.spline_weight", (k, in_features, out_features),
                                      "draw", spline_init)
        self.spline_scaler = (spec.add(f"{name}.spline_scaler", (out_features, in_features),
                                       "uniform", _kaiming_uniform_bound(
                                           in_features, math.sqrt(5) * scale_spline))
                              if standalone_scale_spline else None)
        self.in_features, self.out_features, self.k = in_features, out_features, k

    def __call__(self, p, x):
        base = ops.linear(ops.expand(x, silu), p[self.base_weight], None)
        coeffs = p[self.spline_weight]  # (K, I, O)
        if self.spline_scaler:
            coeffs = ops.mul(coeffs, ops.transpose(p[self.spline_scaler], (1, 0)))
        coeffs = ops.reshape(ops.transpose(coeffs, (1, 0, 2)), (self.in_features * self.k, -1))
        basis = ops.expand(x, lambda v: kernel("bspline_basis")(v, self.grid, self.order))
        spline = ops.linear(ops.reshape(basis, (x.shape[0], -1)), coeffs, None)
        return ops.add(base, spline)


class TaylorKANLayer:
    """RMoK's Taylor expert: sum over inputs of a polynomial of degree order - 1 (coeffs
    (O, I, order), torch's layout) plus a bias."""

    def __init__(self, spec, name, in_features, out_features, order, bias=True):
        self.coeffs = spec.add(f"{name}.coeffs", (out_features, in_features, order), "normal",
                               0.01)
        self.bias = spec.add(f"{name}.bias", (out_features,), "constant", 0.0) if bias else None
        self.order = order

    def __call__(self, p, x):
        basis = ops.expand(x, lambda v: kernel("power_basis")(v, self.order))  # (R, I, order)
        weight = ops.reshape(ops.transpose(p[self.coeffs], (1, 2, 0)), (-1, p[self.coeffs].shape[0]))
        return ops.linear(ops.reshape(basis, (x.shape[0], -1)), weight,
                          p[self.bias] if self.bias else None)


class JacobiKANLayer:
    """RMoK's Jacobi expert: Jacobi polynomials (alpha = a, beta = b) of tanh(x) up to
    `degree`, weighted by jacobi_coeffs (I, O, degree + 1), torch's layout."""

    def __init__(self, spec, name, in_features, out_features, degree, a=1.0, b=1.0):
        self.coeffs = spec.add(f"{name}.jacobi_coeffs", (in_features, out_features, degree + 1),
                               "normal", 1 / (in_features * (degree + 1)))
        self.degree, self.a, self.b = degree, a, b

    def __call__(self, p, x):
        basis = ops.expand(x, lambda v: kernel("jacobi_basis")(v, self.degree, self.a, self.b))
        coeffs = p[self.coeffs]
        weight = ops.reshape(ops.transpose(coeffs, (0, 2, 1)), (-1, coeffs.shape[1]))
        return ops.linear(ops.reshape(basis, (x.shape[0], -1)), weight, None)


class WaveKANLayer:
    """RMoK's wavelet expert: y_o = sum_i w_io psi((x_i - translation_oi) / scale_oi),
    then BatchNorm1d. scale and translation keep torch's (O, I); wavelet_weights and
    weight1 (unused in the forward, as in NeuralForecast, but trained parameters there)
    are stored (I, O)."""

    def __init__(self, spec, name, in_features, out_features, wavelet="mexican_hat"):
        if wavelet not in WAVELETS:
            raise ValueError(f"wavelet_function={wavelet!r} is not one of NeuralForecast's "
                             f"{list(WAVELETS)}.")
        bound = _kaiming_uniform_bound(in_features, math.sqrt(5))
        self.scale = spec.add(f"{name}.scale", (out_features, in_features), "constant", 1.0)
        self.translation = spec.add(f"{name}.translation", (out_features, in_features),
                                    "constant", 0.0)
        spec.add(f"{name}.weight1", (in_features, out_features), "uniform", bound)
        self.weights = spec.add(f"{name}.wavelet_weights", (in_features, out_features),
                                "uniform", bound)
        self.bn = BatchNorm(spec, f"{name}.bn", out_features)
        self.wavelet = wavelet
        # shannon's torch.hamming_window(I, periodic=False); ones for the others
        self.window = (np.hamming(in_features) if wavelet == "shannon" and in_features > 1
                       else np.ones(in_features))

    def __call__(self, p, x, training):
        out = ops.wavelet_layer(x, p[self.translation], p[self.scale], p[self.weights],
                                self.wavelet, self.window.astype(x.data.dtype, copy=False))
        return self.bn(p, out, training)


class KANExperts:
    """RMoK's mixture: Taylor, Jacobi and wavelet KAN experts and a Linear, weighted per
    row by a softmax gate over them."""

    def __init__(self, spec, in_features, out_features, taylor_order, jacobi_degree, wavelet):
        self.experts = [TaylorKANLayer(spec, "experts.0", in_features, out_features, taylor_order),
                        JacobiKANLayer(spec, "experts.1", in_features, out_features,
                                       jacobi_degree),
                        WaveKANLayer(spec, "experts.2", in_features, out_features, wavelet),
                        Linear(spec, "experts.3", in_features, out_features)]
        self.gate = Linear(spec, "gate", in_features, len(self.experts))

    def __call__(self, p, x, training):
        score = self.gate(p, x, "softmax")  # (R, E)
        outputs = [expert(p, x, training) if isinstance(expert, WaveKANLayer) else expert(p, x)
                   for expert in self.experts]
        mixed = None
        for e, out in enumerate(outputs):
            weighted = ops.mul(out, ops.index(score, (slice(None), slice(e, e + 1))))
            mixed = weighted if mixed is None else ops.add(mixed, weighted)
        return mixed
