"""Distribution outputs: the model outputs a distribution's raw parameters per horizon
step, trained by negative log-likelihood, forecast by sampling (NeuralForecast 3.3's
DistributionLoss and its Poisson, Gaussian and negative-binomial mixtures).

The raw outputs are mapped to the distribution's domain and anchored on each window's
scaler statistics (shift, scale) as NeuralForecast's `scale_decouple` does, so the
likelihood is evaluated on the data's own scale (count distributions see counts). The
negative log-likelihood and its gradient are one kernel (`ndwork.kernels.likelihoods`).
Forecasts draw `num_samples` samples from the generator predict passes (seeded by the
model's random_seed, so a forecast repeats) and report the sample mean, the quantiles
and, with return_params=True, the distribution's parameters.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor, backward
from ndwork.kernels import kernel
from ndwork.kernels.likelihoods import TWEEDIE_CLIP, negbin_coupling
from ndwork.losses import isqf
from ndwork.losses.point import Loss, quantile_outputs

# name -> (likelihood kernel, NeuralForecast's parameter column names, decoupling epsilon)
DISTRIBUTIONS = {
    "Normal": ("normal", ["-loc", "-scale"], 0.2),
    "StudentT": ("studentt", ["-df", "-loc", "-scale"], 0.1),
    "Poisson": ("poisson", ["-loc"], 1e-10),
    "NegativeBinomial": ("negbin", ["-total_count", "-logits"], 0.0),
    "Bernoulli": ("bernoulli", ["-logits"], 0.0),
    "Tweedie": ("tweedie", ["-log_mu"], None),  # the parameter is rho
    "ISQF": ("isqf", None, None),  # parameter names depend on the quantiles and pieces
}
COUNTS = ("poisson", "negbin", "negbin_mixture", "tweedie")


def _softplus(x):
    return np.logaddexp(0.0, x)


def decouple(kind: str, raw: np.ndarray, loc: np.ndarray, scale: np.ndarray,
             param: float) -> tuple[np.ndarray, ...]:
    """Raw outputs (..., P) -> the distribution's parameters as NeuralForecast passes them
    to torch (Normal: mean, std; StudentT: df, mean, scale; Poisson: rate;
    NegativeBinomial: total_count, probs; Bernoulli: probs; Tweedie: log_mu), each (...).
    loc and scale broadcast against raw[..., 0]."""
    r = [raw[..., k].astype(np.float64) for k in range(raw.shape[-1])]
    a, s = loc, scale
    if kind == "normal":
        return r[0] * s + a, (_softplus(r[1]) + param) * s
    if kind == "studentt":
        return 3 + _softplus(r[0]), r[1] * s + a, (_softplus(r[2]) + param) * s
    if kind == "poisson":
        return (_softplus(r[0] * s + a) + param,)
    if kind in ("negbin", "negbin_mixture"):
        anchor, divisor, offset = negbin_coupling(kind, a, s)
        m = (_softplus(r[0]) + 1e-8) * anchor + offset
        alpha = (_softplus(r[1]) + 1e-8) / divisor
        return 1 / alpha, m * alpha / (1 + m * alpha) + 1e-8
    if kind == "bernoulli":
        return (expit(r[0]),)
    low, high = TWEEDIE_CLIP
    shifted = np.clip(_softplus(r[0]), low, high) + np.log(np.where(a > 0, a, 1.0))
    return (np.clip(shifted, low, high),)


def mean(kind: str, args: tuple, param: float) -> np.ndarray:
    if kind == "normal":
        return args[0]
    if kind == "studentt":
        return args[1]
    if kind in ("negbin", "negbin_mixture"):
        n, p = args
        return n * p / (1 - p)
    if kind == "tweedie":
        return np.exp(args[0])
    return args[0]  # poisson's rate, bernoulli's probability


def sample(kind: str, args: tuple, n: int, rng: np.random.Generator, param: float) -> np.ndarray:
    """n draws per point: (...) parameters -> (..., n)."""
    args = [np.asarray(x)[..., None] for x in args]
    shape = args[0].shape[:-1] + (n,)
    if kind == "normal":
        return args[0] + args[1] * rng.standard_normal(shape)
    if kind == "studentt":
        return args[1] + args[2] * rng.standard_t(np.broadcast_to(args[0], shape))
    if kind == "poisson":
        return rng.poisson(np.broadcast_to(args[0], shape)).astype(np.float64)
    if kind in ("negbin", "negbin_mixture"):
        total, probs = (np.broadcast_to(x, shape) for x in args)
        # numpy counts failures before `total` successes of probability 1 - torch's probs
        return rng.negative_binomial(total, np.clip(1 - probs, 1e-12, 1.0)).astype(np.float64)
    if kind == "bernoulli":
        return (rng.random(shape) < args[0]).astype(np.float64)
    # Tweedie as NeuralForecast samples it: a Poisson number of Gamma jumps
    rho, mu = param, np.exp(args[0])
    rate = mu ** (2 - rho) / (2 - rho)
    alpha, beta = (2 - rho) / (rho - 1), mu ** (1 - rho) / (rho - 1)
    count = rng.poisson(np.broadcast_to(rate, shape)).astype(np.float64)
    jumps = rng.gamma(np.maximum(count * alpha, 1e-12), 1 / np.broadcast_to(beta, shape))
    return np.where(count > 0, jumps, 0.0)


def check_targets(kind: str, y: np.ndarray, name: str) -> None:
    """Count distributions take non-negative integers, Bernoulli 0/1."""
    y = y[np.isfinite(y)]
    if kind == "bernoulli" and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} models 0/1 targets, and y has other values (e.g. "
                         f"{y[~np.isin(y, (0, 1))][0]!r}); use it for binary series only.")
    if kind in COUNTS and ((y < 0).any() or (kind != "tweedie" and (y != np.round(y)).any())):
        bad = y[(y < 0) | ((y != np.round(y)) & (kind != "tweedie"))][0]
        what = "non-negative" if kind == "tweedie" else "non-negative integer counts"
        raise ValueError(f"{name} models {what}, and y has {bad!r}; use Normal or StudentT "
                         f"for real-valued series, or round/shift the target.")


class _SampledLoss(Loss):
    """What the distribution and mixture losses share: quantile outputs by sampling,
    `predict(level=..., quantiles=...)`, the parameter columns."""

    is_distribution_output = True

    def _outputs(self, level, quantiles, num_samples, return_params):
        self.level = None if quantiles is not None else list(level if level is not None
                                                              else [80, 90])
        self.quantiles, names = quantile_outputs(self.level, quantiles)
        self.num_samples = int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be a positive integer.")
        self.return_params = bool(return_params)
        self.output_names = ["", *names] + (self.param_names if self.return_params else [])

    def num_parameters(self) -> int:
        """NeuralForecast keeps the quantiles as a (frozen) parameter of the loss."""
        return len(self.quantiles)

    def __call__(self, y_hat: Tensor, batch: dict) -> Tensor:
        y = batch["outsample_y_data"]
        weights = self.weights(batch["outsample_mask"])
        value, grad = self.nll(y_hat.data, y, weights, batch["y_shift"], batch["y_scale"])
        return Tensor(np.asarray(value, dtype=y_hat.data.dtype), (y_hat,),
                      lambda g: (grad * g,))

    def value_raw(self, raw, y, mask, shift, scale) -> float:
        """The validation negative log-likelihood of raw outputs against data-scale y."""
        return self.nll(raw, y, self.weights(mask), shift, scale)[0]

    def forecast(self, raw, shift, scale, rng=None, quantiles=None):
        """[sample mean, quantiles (the loss's, or `quantiles`), parameters if asked]
        (W, h, columns) from num_samples independent draws per point."""
        rng = rng if rng is not None else np.random.default_rng(0)
        draws, args = self.sample(raw, shift, scale, self.num_samples, rng)
        return self.summarize(draws, quantiles, args=args)

    def summarize(self, draws, quantiles=None, raw=None, shift=None, scale=None, args=None):
        """Draws (W, h, n) -> [mean, quantiles, parameters (of `raw`) if asked]."""
        qs = self.quantiles if quantiles is None else quantiles
        columns = [draws.mean(axis=-1), *np.quantile(draws, qs, axis=-1)]
        if self.return_params:
            columns += list(args if args is not None else
                            self.sample(raw, shift, scale, 1, np.random.default_rng(0))[1])
        return np.stack(columns, axis=-1)

    def mean(self, raw, shift, scale) -> np.ndarray:
        """The distribution's mean (W, h) in the data's scale."""
        raise NotImplementedError

    def to_point(self, y_hat):
        return y_hat[..., 0]

    def check_targets(self, y: np.ndarray) -> None:
        """Raise if y is outside the distribution's support."""

    def _arguments(self):
        args = {"level": self.level} if self.level is not None else {"quantiles": self.quantiles}
        return {**args, "num_samples": self.num_samples, "return_params": self.return_params,
                **super()._arguments()}


class DistributionLoss(_SampledLoss):
    """A parametric distribution per horizon step, trained by negative log-likelihood.

    distribution: Normal, StudentT, Poisson, NegativeBinomial, Bernoulli, Tweedie (with
    rho in (1, 2)) or ISQF (a spline quantile function through the loss's quantiles,
    num_pieces per interval; see ndwork.losses.isqf). level / quantiles: the intervals or
    quantiles predict reports (columns `-median`, `-lo-90`, ... after the mean's bare
    column). num_samples: draws
    per point for them. return_params: also report the distribution's parameters.
    horizon_weight: (h,) weights of the horizon's steps in the loss.

    Tweedie follows NeuralForecast: its log density omits the normalizing series (the
    loss is not a likelihood, its gradient is the deviance's), and log_mu is clipped to
    [1e-9, 37], so its mean is at least 1.
    """

    def __init__(self, distribution: str, level: list | None = None, quantiles: list | None = None,
                 num_samples: int = 1000, return_params: bool = False, horizon_weight=None,
                 **distribution_kwargs):
        super().__init__(horizon_weight)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution {distribution!r} is not known; use one of "
                             f"{list(DISTRIBUTIONS)}.")
        self.distribution = distribution
        self.kind, self.param_names, self.param = DISTRIBUTIONS[distribution]
        self.distribution_kwargs = dict(distribution_kwargs)
        if distribution == "Tweedie":
            rho = distribution_kwargs.pop("rho", None)
            if rho is None or not 1 < rho < 2:
                raise ValueError(f"DistributionLoss('Tweedie') needs rho in (1, 2), e.g. "
                                 f"rho=1.5; got {rho!r}.")
            self.param = float(rho)
            if return_params:
                raise ValueError("DistributionLoss('Tweedie') cannot return_params (as in "
                                 "NeuralForecast); leave return_params=False.")
        self.num_pieces = int(distribution_kwargs.pop("num_pieces", 5))
        if distribution == "ISQF" and return_params:
            raise ValueError("DistributionLoss('ISQF') cannot return_params (as in "
                             "NeuralForecast); leave return_params=False.")
        if distribution_kwargs:
            raise ValueError(f"DistributionLoss({distribution!r}) got unknown option(s) "
                             f"{sorted(distribution_kwargs)}; Tweedie takes rho, ISQF "
                             f"num_pieces.")
        self._outputs(level, quantiles, num_samples, return_params)
        if self.kind == "isqf":
            if len(self.quantiles) < 2 or self.num_pieces < 1:
                raise ValueError("DistributionLoss('ISQF') needs at least two quantiles and "
                                 "num_pieces >= 1.")
            self.knots = np.sort(np.asarray(self.quantiles, np.float64))
            self.param_names = isqf.param_names(len(self.knots), self.num_pieces)
        self.outputsize_multiplier = len(self.param_names)

    def nll(self, raw, y, weights, shift, scale):
        w, h, p = raw.shape
        if self.kind == "isqf":
            return self._isqf_nll(raw, y, weights, shift, scale)
        values, grads = kernel("nll")(self.kind, raw.reshape(-1, p), y.reshape(-1),
                                      np.repeat(shift, h), np.repeat(scale, h), self.param)
        weights = weights.reshape(-1)
        total = weights.sum()
        if total == 0:
            return 0.0, np.zeros_like(raw)
        live = weights != 0  # a masked point's NaN (padding) does not count, as in NF
        value = float((values[live] * weights[live]).sum() / total)
        grads = np.where(live[:, None], grads * (weights / total)[:, None], 0)
        return value, grads.astype(raw.dtype).reshape(raw.shape)

    def _isqf_nll(self, raw, y, weights, shift, scale):
        """The weighted mean of ISQF's loss and its gradient, through autodiff ops."""
        w, h, p = raw.shape
        total = weights.sum()
        if total == 0:
            return 0.0, np.zeros_like(raw)
        x = Tensor(raw.reshape(-1, p).astype(np.float64), requires_grad=True)
        per_point = isqf.nll(x, y.reshape(-1).astype(np.float64), np.repeat(shift, h),
                             np.repeat(scale, h), self.knots, self.num_pieces)
        share = (weights.reshape(-1) / total).astype(np.float64)
        live = share != 0
        value = ops.total(ops.select(live, ops.mul(per_point, ops.constant(share)),
                                     ops.constant(np.zeros_like(share))), axis=0)
        backward(value)
        return float(value.data), x.grad.reshape(raw.shape).astype(raw.dtype)

    def sample(self, raw, shift, scale, n, rng):
        if self.kind == "isqf":
            w, h, p = raw.shape
            draws = isqf.sample(raw.reshape(-1, p), np.repeat(shift, h), np.repeat(scale, h),
                                self.knots, self.num_pieces, n, rng)
            return draws.reshape(w, h, n), ()
        args = decouple(self.kind, raw, shift[:, None], scale[:, None], self.param)
        return sample(self.kind, args, n, rng, self.param), args

    def mean(self, raw, shift, scale):
        if self.kind == "isqf":  # NeuralForecast's: the mean of 1,000 draws
            return self.sample(raw, shift, scale, 1000, np.random.default_rng(0))[0].mean(-1)
        return mean(self.kind, decouple(self.kind, raw, shift[:, None], scale[:, None],
                                        self.param), self.param)

    def check_targets(self, y):
        check_targets(self.kind, y, f"DistributionLoss({self.distribution!r})")

    def _arguments(self):
        extra = {"rho": self.param} if self.distribution == "Tweedie" else {}
        if self.distribution == "ISQF":
            extra = {"num_pieces": self.num_pieces}
        return {"distribution": self.distribution, **super()._arguments(), **extra}


class _Mixture(_SampledLoss):
    """A mixture of K components of one family per horizon step. The raw outputs are
    parameter-major ([first parameter of the K components | second ... | weights]), the
    weights a softmax (weighted=True) or equal. n_components: NeuralForecast's default
    (PMM 10, GMM and NBMM 1) when None. batch_correlation / horizon_correlation:
    the components' log-likelihoods are summed over the batch / horizon before mixing,
    so a component explains a whole group (NeuralForecast's Poisson Mixture Mesh)."""

    kind = ""
    param = 0.0
    component_names: list[str] = []
    default_components = 1  # NeuralForecast's default n_components

    def __init__(self, n_components: int | None = None, level: list | None = None,
                 quantiles: list | None = None, num_samples: int = 1000,
                 return_params: bool = False, batch_correlation: bool = False,
                 horizon_correlation: bool = False, weighted: bool = False):
        super().__init__(None)
        self.n_components = int(self.default_components if n_components is None
                                 else n_components)
        if self.n_components < 1:
            raise ValueError(f"n_components={n_components} must be a positive integer.")
        self.batch_correlation, self.horizon_correlation = batch_correlation, horizon_correlation
        self.weighted = bool(weighted)
        names = [[f"{n}-{k}" for k in range(1, self.n_components + 1)]
                 for n in self.component_names + (["-weight"] if self.weighted else [])]
        self.param_names = [n for group in zip(*names, strict=True) for n in group]
        self.n_outputs = len(names)
        self.outputsize_multiplier = self.n_outputs * self.n_components
        self._outputs(level, quantiles, num_samples, return_params)

    def _split(self, raw):
        """(W, h, n_outputs K) -> component raw (W, h, K, P) and log weights (W, h, K)."""
        w, h, _ = raw.shape
        parts = raw.reshape(w, h, self.n_outputs, self.n_components)
        p = len(self.component_names)
        components = np.moveaxis(parts[:, :, :p], 2, 3)
        if self.weighted:
            logits = parts[:, :, p].astype(np.float64)
            return components, logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        return components, np.full((w, h, self.n_components), -np.log(self.n_components))

    def nll(self, raw, y, weights, shift, scale):
        w, h, _ = raw.shape
        k = self.n_components
        components, log_w = self._split(raw)
        p = components.shape[-1]
        per_point = components.reshape(-1, p)
        repeat = h * k
        values, grads = kernel("nll")(self.kind, per_point, np.repeat(y.reshape(-1), k),
                                      np.repeat(shift, repeat), np.repeat(scale, repeat),
                                      self.param)
        log_p = -values.astype(np.float64).reshape(w, h, k)
        axes = tuple(a for a, on in ((0, self.batch_correlation), (1, self.horizon_correlation))
                     if on)
        grouped = log_p.sum(axis=axes, keepdims=True) if axes else log_p
        z = grouped + log_w
        top = z.max(axis=-1, keepdims=True)
        lse = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))
        total = weights.sum()
        if total == 0:
            return 0.0, np.zeros_like(raw)
        share = (weights / total).astype(np.float64)
        value = float(-(lse * share).sum())
        d_z = -share[..., None] * np.exp(z - lse[..., None])  # d value / d z
        d_log_p = d_z.sum(axis=axes, keepdims=True) if axes else d_z
        d_log_p = np.broadcast_to(d_log_p, log_p.shape)
        d_raw = np.empty((w, h, self.n_outputs, k))
        d_raw[:, :, :p] = np.moveaxis(-d_log_p[..., None] * grads.reshape(w, h, k, p), 3, 2)
        if self.weighted:
            d_raw[:, :, p] = d_z - np.exp(log_w) * d_z.sum(axis=-1, keepdims=True)
        return value, d_raw.reshape(raw.shape).astype(raw.dtype)

    def sample(self, raw, shift, scale, n, rng):
        components, log_w = self._split(raw)
        loc, sc = shift[:, None, None], scale[:, None, None]
        args = decouple(self.kind, components, loc, sc, self.param)
        cumulative = np.cumsum(np.exp(log_w), axis=-1)
        u = rng.random(log_w.shape[:2] + (n, 1))
        chosen = np.minimum((u > cumulative[:, :, None, :]).sum(axis=-1), self.n_components - 1)
        picked = tuple(np.take_along_axis(x, chosen, axis=-1) for x in args)  # (W, h, n)
        draws = sample(self.kind, picked, 1, rng, self.param)[..., 0]
        columns = [x for x in args] + ([np.exp(log_w)] if self.weighted else [])
        return draws, tuple(c[..., j] for j in range(self.n_components) for c in columns)

    def mean(self, raw, shift, scale):
        components, log_w = self._split(raw)
        args = decouple(self.kind, components, shift[:, None, None], scale[:, None, None],
                        self.param)
        return (np.exp(log_w) * mean(self.kind, args, self.param)).sum(axis=-1)

    def check_targets(self, y):
        check_targets(self.kind, y, type(self).__name__)

    def _arguments(self):
        return {"n_components": self.n_components, **super()._arguments(),
                "batch_correlation": self.batch_correlation,
                "horizon_correlation": self.horizon_correlation, "weighted": self.weighted}


class PMM(_Mixture):
    """Poisson mixture: rates softplus(r s + a) + 1e-3 (NeuralForecast's PMM)."""

    kind, param, component_names = "poisson", 1e-3, ["-lambda"]
    default_components = 10


class GMM(_Mixture):
    """Gaussian mixture: means r s + a, standard deviations (softplus(r) + 0.2) s."""

    kind, param, component_names = "normal", 0.2, ["-mu", "-std"]


class NBMM(_Mixture):
    """Negative-binomial mixture: means (softplus(r) + 1e-8) a and dispersions
    (softplus(r) + 1e-8) / (a + 1), a the window's shift (unanchored where a <= 0)."""

    kind, param, component_names = "negbin_mixture", 0.0, ["-total_count", "-probs"]
