"""Kolmogorov-Arnold bases (KAN, RMoK), numba beside the numpy references.

Each basis maps x (R, I) to K functions of each element, returning their values and
their derivatives in x, (R, I, K) each: B-splines on a knot grid (Cox-de Boor's
recursion, the exact derivative of NeuralForecast's), powers x^0 .. x^(K-1), and the
Jacobi polynomials of tanh(x) by their three-term recurrence. The wavelet layer
y[r, o] = sum_i w[i, o] win[i] psi((x[r, i] - t[o, i]) / s[o, i]) runs fused, forward
and backward, without the (R, O, I) intermediates a composition of ops would keep.
Wavelets (NeuralForecast's WaveKANLayer): 0 mexican_hat, 1 morlet, 2 dog, 3 meyer,
4 shannon (sinc; its Hamming window is `win`, ones for the others).
"""

import math

import numpy as np

from ndwork.kernels._jit import jit
from ndwork.kernels.fastmath import exp_into

WAVELETS = ("mexican_hat", "morlet", "dog", "meyer", "shannon")
_HAT = 2 / (math.sqrt(3) * math.pi ** 0.25)


# --- numpy references -------------------------------------------------------

def bspline_basis_reference(x, grid, order):
    x = x[..., None]
    b = ((x >= grid[:-1]) & (x < grid[1:])).astype(x.dtype)
    db = np.zeros_like(b)
    for k in range(1, order + 1):
        left_span, right_span = grid[k:-1] - grid[:-(k + 1)], grid[k + 1:] - grid[1:-k]
        left, right = (x - grid[:-(k + 1)]) / left_span, (grid[k + 1:] - x) / right_span
        b, db = (left * b[..., :-1] + right * b[..., 1:],
                 b[..., :-1] / left_span + left * db[..., :-1]
                 - b[..., 1:] / right_span + right * db[..., 1:])
    return b.astype(x.dtype), db.astype(x.dtype)


def power_basis_reference(x, order):
    powers = np.arange(order)
    values = (x[..., None] ** powers).astype(x.dtype)
    slopes = np.zeros_like(values)
    slopes[..., 1:] = powers[1:] * x[..., None] ** (powers[1:] - 1)
    return values, slopes


def _jacobi_coefficients(i, a, b):
    k0 = (2 * i + a + b) * (2 * i + a + b - 1) / (2 * i * (i + a + b))
    k1 = (2 * i + a + b - 1) * (a * a - b * b) / (2 * i * (i + a + b) * (2 * i + a + b - 2))
    k2 = (i + a - 1) * (i + b - 1) * (2 * i + a + b) / (i * (i + a + b) * (2 * i + a + b - 2))
    return k0, k1, k2


def jacobi_basis_reference(x, degree, a, b):
    t = np.tanh(x)
    values = np.ones((*x.shape, degree + 1), x.dtype)
    slopes = np.zeros_like(values)  # in t
    if degree > 0:
        values[..., 1] = (a - b + (a + b + 2) * t) / 2
        slopes[..., 1] = (a + b + 2) / 2
    for i in range(2, degree + 1):
        k0, k1, k2 = _jacobi_coefficients(i, a, b)
        values[..., i] = (k0 * t + k1) * values[..., i - 1] - k2 * values[..., i - 2]
        slopes[..., i] = (k0 * values[..., i - 1] + (k0 * t + k1) * slopes[..., i - 1]
                          - k2 * slopes[..., i - 2])
    return values, slopes * (1 - t * t)[..., None]


def wavelet_reference(s, code):
    """psi(s) and psi'(s), elementwise."""
    if code == 0:
        g = np.exp(-0.5 * s * s)
        return _HAT * (s * s - 1) * g, _HAT * s * g * (3 - s * s)
    if code == 1:
        g = np.exp(-0.5 * s * s)
        return np.cos(5 * s) * g, -g * (5 * np.sin(5 * s) + s * np.cos(5 * s))
    if code == 2:
        g = np.exp(-0.5 * s * s)
        return -s * g, (s * s - 1) * g
    if code == 3:
        v = np.abs(s)
        t = 2 * v - 1
        nu = t ** 4 * (35 - 84 * t + 70 * t ** 2 - 20 * t ** 3)
        dnu = 2 * (140 * t ** 3 - 420 * t ** 4 + 420 * t ** 5 - 140 * t ** 6)  # in v
        inner = (v > 0.5) & (v < 1)
        aux = np.where(v <= 0.5, 1.0, np.where(inner, np.cos(math.pi / 2 * nu), 0.0))
        daux = np.where(inner, -np.sin(math.pi / 2 * nu) * math.pi / 2 * dnu, 0.0)
        slope = np.sign(s) * (math.pi * np.cos(math.pi * v) * aux + np.sin(math.pi * v) * daux)
        return (np.sin(math.pi * v) * aux).astype(s.dtype), slope.astype(s.dtype)
    safe = np.where(s == 0, 1.0, s)  # shannon: sin(s) / s
    value = np.where(s == 0, 1.0, np.sin(safe) / safe)
    slope = np.where(s == 0, 0.0, (safe * np.cos(safe) - np.sin(safe)) / (safe * safe))
    return value.astype(s.dtype), slope.astype(s.dtype)


def wavelet_layer_forward_reference(x, translation, scale, weights, window, code):
    s = (x[:, None, :] - translation) / scale  # (R, O, I)
    psi, _ = wavelet_reference(s, code)
    return (psi * (weights.T * window)).sum(axis=2)


def wavelet_layer_backward_reference(x, translation, scale, weights, window, code, dy):
    s = (x[:, None, :] - translation) / scale
    psi, slope = wavelet_reference(s, code)
    weighted = weights.T * window  # (O, I)
    dweights = (np.einsum("ro,roi->io", dy, psi) * window[:, None]).astype(x.dtype)
    ds_ = dy[:, :, None] * weighted * slope / scale  # d loss / d x per (r, o, i)
    return (ds_.sum(axis=1), -ds_.sum(axis=0), -(ds_ * s).sum(axis=0), dweights)


# --- numba --------------------------------------------------------------------

@jit
def _bspline(x, grid, order, values, slopes):
    rows, cols = x.shape
    m = grid.shape[0] - 1
    b = np.empty(m)
    db = np.empty(m)
    for r in range(rows):
        for c in range(cols):
            v = x[r, c]
            for j in range(m):
                b[j] = 1.0 if grid[j] <= v < grid[j + 1] else 0.0
                db[j] = 0.0
            for k in range(1, order + 1):
                for j in range(m - k):
                    left_span = grid[j + k] - grid[j]
                    right_span = grid[j + k + 1] - grid[j + 1]
                    left = (v - grid[j]) / left_span
                    right = (grid[j + k + 1] - v) / right_span
                    new_db = (b[j] / left_span + left * db[j] - b[j + 1] / right_span
                              + right * db[j + 1])
                    b[j] = left * b[j] + right * b[j + 1]
                    db[j] = new_db
            for j in range(m - order):
                values[r, c, j] = b[j]
                slopes[r, c, j] = db[j]


def bspline_basis(x, grid, order):
    x = np.ascontiguousarray(x)
    flat = x.reshape(-1, x.shape[-1])
    k = len(grid) - 1 - order
    values = np.empty((*flat.shape, k), x.dtype)
    slopes = np.empty_like(values)
    _bspline(flat, np.asarray(grid, np.float64), order, values, slopes)
    return values.reshape(*x.shape, k), slopes.reshape(*x.shape, k)


@jit
def _powers(x, values, slopes):
    flat = x.reshape(-1)
    order = values.shape[1]
    for e in range(flat.shape[0]):
        v = flat[e]
        p, previous = 1.0, 0.0
        for i in range(order):
            values[e, i] = p
            slopes[e, i] = i * previous
            previous = p
            p *= v


def power_basis(x, order):
    x = np.ascontiguousarray(x)
    values = np.empty((x.size, order), x.dtype)
    slopes = np.empty_like(values)
    _powers(x, values, slopes)
    return values.reshape(*x.shape, order), slopes.reshape(*x.shape, order)


@jit
def _jacobi(x, degree, a, b, coefficients, values, slopes):
    flat = x.reshape(-1)
    for e in range(flat.shape[0]):
        t = math.tanh(flat[e])
        values[e, 0] = 1.0
        slopes[e, 0] = 0.0
        if degree > 0:
            values[e, 1] = (a - b + (a + b + 2) * t) / 2
            slopes[e, 1] = (a + b + 2) / 2
        for i in range(2, degree + 1):
            k0, k1, k2 = coefficients[i, 0], coefficients[i, 1], coefficients[i, 2]
            values[e, i] = (k0 * t + k1) * values[e, i - 1] - k2 * values[e, i - 2]
            slopes[e, i] = (k0 * values[e, i - 1] + (k0 * t + k1) * slopes[e, i - 1]
                            - k2 * slopes[e, i - 2])
        chain = 1 - t * t
        for i in range(degree + 1):
            slopes[e, i] *= chain


def jacobi_basis(x, degree, a, b):
    x = np.ascontiguousarray(x)
    coefficients = np.zeros((degree + 1, 3))
    for i in range(2, degree + 1):
        coefficients[i] = _jacobi_coefficients(i, a, b)
    values = np.empty((x.size, degree + 1), x.dtype)
    slopes = np.empty_like(values)
    _jacobi(x, degree, float(a), float(b), coefficients, values, slopes)
    return values.reshape(*x.shape, degree + 1), slopes.reshape(*x.shape, degree + 1)


@jit
def _psi(s, g, code):
    """(psi(s), psi'(s)) of wavelet `code`, g = exp(-s^2 / 2) given (computed vectorized)."""
    if code == 0:
        return _HAT * (s * s - 1) * g, _HAT * s * g * (3 - s * s)
    if code == 1:
        return math.cos(5 * s) * g, -g * (5 * math.sin(5 * s) + s * math.cos(5 * s))
    if code == 2:
        return -s * g, (s * s - 1) * g
    if code == 3:
        v = abs(s)
        if v >= 1.0:  # 0, but NaN at an infinite s, as the reference's sin(inf) * 0
            return math.sin(math.pi * v) * 0.0, math.cos(math.pi * v) * 0.0
        sign = 1.0 if s > 0 else (-1.0 if s < 0 else 0.0)
        if v <= 0.5:
            return math.sin(math.pi * v), sign * math.pi * math.cos(math.pi * v)
        t = 2 * v - 1
        nu = t ** 4 * (35 - 84 * t + 70 * t ** 2 - 20 * t ** 3)
        dnu = 2 * (140 * t ** 3 - 420 * t ** 4 + 420 * t ** 5 - 140 * t ** 6)
        aux = math.cos(math.pi / 2 * nu)
        daux = -math.sin(math.pi / 2 * nu) * math.pi / 2 * dnu
        return (math.sin(math.pi * v) * aux,
                sign * (math.pi * math.cos(math.pi * v) * aux + math.sin(math.pi * v) * daux))
    if s == 0:
        return 1.0, 0.0
    return math.sin(s) / s, (s * math.cos(s) - math.sin(s)) / (s * s)


@jit
def _scaled(x, translation, inv_scale, r, s, g):
    """s[o, i] = (x[r, i] - translation[o, i]) / scale[o, i], g = exp(-s^2 / 2)."""
    for o in range(translation.shape[0]):
        for i in range(x.shape[1]):
            s[o, i] = (x[r, i] - translation[o, i]) * inv_scale[o, i]
            g[o, i] = s[o, i] * s[o, i]
    exp_into(g.reshape(-1), g.reshape(-1), -0.5)


@jit
def _wavelet_forward(x, translation, inv_scale, weighted, code, y):
    rows, n_in = x.shape
    s, g = np.empty(translation.shape, x.dtype), np.empty(translation.shape, x.dtype)
    for r in range(rows):
        _scaled(x, translation, inv_scale, r, s, g)
        for o in range(translation.shape[0]):
            acc = 0.0
            if code == 0:  # the default (mexican hat), in a loop LLVM vectorizes
                for i in range(n_in):
                    acc += weighted[o, i] * _HAT * (s[o, i] * s[o, i] - 1) * g[o, i]
            else:
                for i in range(n_in):
                    acc += weighted[o, i] * _psi(s[o, i], g[o, i], code)[0]
            y[r, o] = acc


@jit
def _wavelet_backward(x, translation, inv_scale, weighted, window, code, dy, dx, dt, ds, dw):
    rows, n_in = x.shape
    s, g = np.empty(translation.shape, x.dtype), np.empty(translation.shape, x.dtype)
    for r in range(rows):
        _scaled(x, translation, inv_scale, r, s, g)
        for o in range(translation.shape[0]):
            grad = dy[r, o]
            for i in range(n_in):
                if code == 0:
                    q = s[o, i] * s[o, i]
                    psi, slope = _HAT * (q - 1) * g[o, i], _HAT * s[o, i] * g[o, i] * (3 - q)
                else:
                    psi, slope = _psi(s[o, i], g[o, i], code)
                dw[i, o] += grad * window[i] * psi
                d = grad * weighted[o, i] * slope * inv_scale[o, i]
                dx[r, i] += d
                dt[o, i] -= d
                ds[o, i] -= d * s[o, i]


def _prepared(x, scale, weights, window):
    """inv_scale (O, I) and the windowed weights (O, I), in x's dtype."""
    return ((1 / scale).astype(x.dtype), np.ascontiguousarray((weights.T * window).astype(x.dtype)))


def wavelet_layer_forward(x, translation, scale, weights, window, code):
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], translation.shape[0]), x.dtype)
    inv_scale, weighted = _prepared(x, scale, weights, window)
    _wavelet_forward(x, translation.astype(x.dtype), inv_scale, weighted, code, y)
    return y


def wavelet_layer_backward(x, translation, scale, weights, window, code, dy):
    x = np.ascontiguousarray(x)
    dx = np.zeros_like(x)
    grads = [np.zeros(translation.shape), np.zeros(scale.shape), np.zeros(weights.shape)]
    inv_scale, weighted = _prepared(x, scale, weights, window)
    _wavelet_backward(x, translation.astype(x.dtype), inv_scale, weighted,
                      window.astype(x.dtype), code, np.ascontiguousarray(dy, x.dtype), dx,
                      *grads)  # float64 sums over the rows
    return (dx, *(grad.astype(x.dtype) for grad in grads))


KERNELS = {
    "bspline_basis": (bspline_basis, bspline_basis_reference),
    "power_basis": (power_basis, power_basis_reference),
    "jacobi_basis": (jacobi_basis, jacobi_basis_reference),
    "wavelet_layer_forward": (wavelet_layer_forward, wavelet_layer_forward_reference),
    "wavelet_layer_backward": (wavelet_layer_backward, wavelet_layer_backward_reference),
}
