"""Negative log-likelihoods of NeuralForecast's distributions and their gradients with
respect to the network's raw outputs, one call per batch.

raw (N, P): the model's P outputs per point, before the domain map. The kernel applies
NeuralForecast 3.3's domain map and scale decoupling with the window's loc (shift) and
scale, evaluates -log p(y) and differentiates through all of it:

- normal (mean, std): mu = r0 s + a, sigma = (softplus(r1) + param) s        (param: 0.2)
- studentt (df, loc, scale): nu = 3 + softplus(r0), mu = r1 s + a,
  sigma = (softplus(r2) + param) s                                             (param: 0.1)
- poisson (rate): lambda = softplus(r0 s + a) + param        (1e-10; PMM's components 1e-3)
- negbin (mu, alpha): m = (softplus(r0) + 1e-8) s + a, alpha = (softplus(r1) + 1e-8) / (s + 1),
  n = 1 / alpha, p = m alpha / (1 + m alpha) + 1e-8; torch's NegativeBinomial(n, p)
- negbin_mixture: NBMM's components, m = (softplus(r0) + 1e-8) a, alpha = (...) / (a + 1);
  where a <= 0 (the identity scaler's shift is 0) NeuralForecast's m = 0 cannot learn, so
  ndwork leaves m and alpha unanchored there
- bernoulli (logits): p = sigmoid(r0)
- tweedie (log_mu): log_mu = clip(softplus(r0), 1e-9, 37) [+ log a where a > 0], clipped
  again (NeuralForecast adds log a for a <= 0 too, which pins log_mu at 1e-9 under the
  identity scaler; ndwork adds it only where a > 0). NeuralForecast's unnormalized log
  density -(y mu^(1-rho)/(1-rho) - mu^(2-rho)/(2-rho)) with rho = param omits the
  normalizing series, so its value is not a likelihood (its
  gradient is that of the true Tweedie deviance).

Returned per point (not reduced): nll (N,) and d nll / d raw (N, P); the loss averages.
"""

import math

import numpy as np
from scipy.special import digamma, expit, gammaln

from ndwork.kernels._jit import jit

LIKELIHOODS = {"normal": 0, "studentt": 1, "poisson": 2, "negbin": 3, "bernoulli": 4,
               "tweedie": 5, "negbin_mixture": 6}
N_PARAMS = {"normal": 2, "studentt": 3, "poisson": 1, "negbin": 2, "bernoulli": 1, "tweedie": 1,
            "negbin_mixture": 2}
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
TWEEDIE_CLIP = (1e-9, 37.0)


# --- numpy reference -----------------------------------------------------------

def _softplus(x):
    return np.logaddexp(0.0, x)


def negbin_coupling(kind, a, s):
    """(anchor, divisor, offset) of the mean and dispersion: NegativeBinomial anchors on
    the window's scale and shift, NBMM on the shift alone (where it is positive)."""
    if kind == "negbin":
        return s, s + 1, a
    positive = a > 0
    return np.where(positive, a, 1.0), np.where(positive, a + 1, 1.0), 0.0


def nll_reference(kind, raw, y, loc, scale, param=0.0):
    """(nll (N,), d nll / d raw (N, P)), computed in float64 with scipy's special functions."""
    dtype = raw.dtype
    r = raw.astype(np.float64)
    y, a, s = (np.asarray(v, np.float64) for v in (y, loc, scale))
    grad = np.zeros_like(r)
    if kind == "normal":
        mu, sigma = r[:, 0] * s + a, (_softplus(r[:, 1]) + param) * s
        z = (y - mu) / sigma
        nll = 0.5 * z * z + np.log(sigma) + HALF_LOG_2PI
        grad[:, 0] = -z / sigma * s
        grad[:, 1] = (1 - z * z) / sigma * s * expit(r[:, 1])
    elif kind == "studentt":
        nu = 3 + _softplus(r[:, 0])
        mu, sigma = r[:, 1] * s + a, (_softplus(r[:, 2]) + param) * s
        z = (y - mu) / sigma
        q = z * z / nu
        nll = (gammaln(nu / 2) - gammaln((nu + 1) / 2) + 0.5 * np.log(nu * np.pi)
               + np.log(sigma) + (nu + 1) / 2 * np.log1p(q))
        d_nu = (0.5 * digamma(nu / 2) - 0.5 * digamma((nu + 1) / 2) + 0.5 / nu
                + 0.5 * np.log1p(q) - (nu + 1) / 2 * q / (nu * (1 + q)))
        grad[:, 0] = d_nu * expit(r[:, 0])
        grad[:, 1] = -(nu + 1) * z / (sigma * (nu + z * z)) * s
        grad[:, 2] = (1 / sigma - (nu + 1) * z * z / (sigma * (nu + z * z))) * s * expit(r[:, 2])
    elif kind == "poisson":
        u = r[:, 0] * s + a
        rate = _softplus(u) + param
        nll = rate - y * np.log(rate) + gammaln(y + 1)
        grad[:, 0] = (1 - y / rate) * expit(u) * s
    elif kind in ("negbin", "negbin_mixture"):
        anchor, divisor, offset = negbin_coupling(kind, a, s)
        m = (_softplus(r[:, 0]) + 1e-8) * anchor + offset
        alpha = (_softplus(r[:, 1]) + 1e-8) / divisor
        n = 1 / alpha
        p = m * alpha / (1 + m * alpha) + 1e-8
        nll = -(n * np.log1p(-p) + y * np.log(p) + gammaln(n + y) - gammaln(n)) + gammaln(y + 1)
        d_p = n / (1 - p) - y / p
        d_n = -(np.log1p(-p) + digamma(n + y) - digamma(n))
        denominator = (1 + m * alpha) ** 2
        grad[:, 0] = d_p * alpha / denominator * expit(r[:, 0]) * anchor
        grad[:, 1] = (d_p * m / denominator - d_n / alpha ** 2) * expit(r[:, 1]) / divisor
    elif kind == "bernoulli":
        nll = _softplus(r[:, 0]) - y * r[:, 0]
        grad[:, 0] = expit(r[:, 0]) - y
    elif kind == "tweedie":
        sp = _softplus(r[:, 0])
        low, high = TWEEDIE_CLIP
        inner = np.clip(sp, low, high)
        shifted = inner + np.log(np.where(a > 0, a, 1.0))
        log_mu = np.clip(shifted, low, high)
        rho = param
        a_term = y * np.exp((1 - rho) * log_mu)
        b_term = np.exp((2 - rho) * log_mu)
        nll = -(a_term / (1 - rho) - b_term / (2 - rho))
        live = (sp > low) & (sp < high) & (shifted > low) & (shifted < high)
        grad[:, 0] = np.where(live, -(a_term - b_term) * expit(r[:, 0]), 0.0)
    else:
        raise ValueError(f"unknown likelihood {kind!r}; use one of {list(LIKELIHOODS)}")
    return nll.astype(dtype), grad.astype(dtype)


# --- numba kernel ----------------------------------------------------------------

@jit(inline="always")
def _softplus1(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


@jit(inline="always")
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@jit(inline="always")
def _digamma(x):
    """psi(x) for x > 0: recurrence up to x >= 6, then the asymptotic series (~1e-13)."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return result + math.log(x) - 0.5 / x - series


@jit
def _nll(code, raw, y, loc, scale, param, nll, grad):
    for i in range(raw.shape[0]):
        yi, a, s = float(y[i]), float(loc[i]), float(scale[i])
        if code == 0:
            r1 = float(raw[i, 1])
            sigma = (_softplus1(r1) + param) * s
            z = (yi - (raw[i, 0] * s + a)) / sigma
            nll[i] = 0.5 * z * z + math.log(sigma) + HALF_LOG_2PI
            grad[i, 0] = -z / sigma * s
            grad[i, 1] = (1 - z * z) / sigma * s * _sigmoid(r1)
        elif code == 1:
            r0, r2 = float(raw[i, 0]), float(raw[i, 2])
            nu = 3.0 + _softplus1(r0)
            sigma = (_softplus1(r2) + param) * s
            z = (yi - (raw[i, 1] * s + a)) / sigma
            q = z * z / nu
            nll[i] = (math.lgamma(nu / 2) - math.lgamma((nu + 1) / 2)
                      + 0.5 * math.log(nu * math.pi) + math.log(sigma)
                      + (nu + 1) / 2 * math.log1p(q))
            d_nu = (0.5 * _digamma(nu / 2) - 0.5 * _digamma((nu + 1) / 2) + 0.5 / nu
                    + 0.5 * math.log1p(q) - (nu + 1) / 2 * q / (nu * (1 + q)))
            grad[i, 0] = d_nu * _sigmoid(r0)
            grad[i, 1] = -(nu + 1) * z / (sigma * (nu + z * z)) * s
            grad[i, 2] = (1 / sigma - (nu + 1) * z * z / (sigma * (nu + z * z))) * s * _sigmoid(r2)
        elif code == 2:
            u = raw[i, 0] * s + a
            rate = _softplus1(u) + param
            nll[i] = rate - yi * math.log(rate) + math.lgamma(yi + 1)
            grad[i, 0] = (1 - yi / rate) * _sigmoid(u) * s
        elif code == 3 or code == 6:
            r0, r1 = float(raw[i, 0]), float(raw[i, 1])
            if code == 3:
                anchor, divisor, offset = s, s + 1, a
            elif a > 0:
                anchor, divisor, offset = a, a + 1, 0.0
            else:
                anchor, divisor, offset = 1.0, 1.0, 0.0
            m = (_softplus1(r0) + 1e-8) * anchor + offset
            alpha = (_softplus1(r1) + 1e-8) / divisor
            n = 1 / alpha
            p = m * alpha / (1 + m * alpha) + 1e-8
            nll[i] = (-(n * math.log1p(-p) + yi * math.log(p) + math.lgamma(n + yi)
                        - math.lgamma(n)) + math.lgamma(yi + 1))
            d_p = n / (1 - p) - yi / p
            d_n = -(math.log1p(-p) + _digamma(n + yi) - _digamma(n))
            denominator = (1 + m * alpha) ** 2
            grad[i, 0] = d_p * alpha / denominator * _sigmoid(r0) * anchor
            grad[i, 1] = (d_p * m / denominator - d_n / alpha ** 2) * _sigmoid(r1) / divisor
        elif code == 4:
            r0 = float(raw[i, 0])
            nll[i] = _softplus1(r0) - yi * r0
            grad[i, 0] = _sigmoid(r0) - yi
        else:
            r0 = float(raw[i, 0])
            sp = _softplus1(r0)
            inner = min(max(sp, 1e-9), 37.0)
            shifted = inner + (math.log(a) if a > 0 else 0.0)
            log_mu = min(max(shifted, 1e-9), 37.0)
            a_term = yi * math.exp((1 - param) * log_mu)
            b_term = math.exp((2 - param) * log_mu)
            nll[i] = -(a_term / (1 - param) - b_term / (2 - param))
            live = 1e-9 < sp < 37.0 and 1e-9 < shifted < 37.0
            grad[i, 0] = -(a_term - b_term) * _sigmoid(r0) if live else 0.0


def nll(kind, raw, y, loc, scale, param=0.0):
    if kind not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {kind!r}; use one of {list(LIKELIHOODS)}")
    raw = np.ascontiguousarray(raw)
    values = np.empty(raw.shape[0], raw.dtype)
    grad = np.empty_like(raw)
    as_raw = [np.ascontiguousarray(v, raw.dtype) for v in (y, loc, scale)]
    _nll(LIKELIHOODS[kind], raw, *as_raw, float(param), values, grad)
    return values, grad


KERNELS = {"nll": (nll, nll_reference)}
