"""ISQF, the incremental spline quantile function (Park et al. 2022), as NeuralForecast 3.3
defines it (after GluonTS): between the quantile knots qk_x (the loss's sorted quantiles)
the quantile function is a monotone piecewise-linear spline of `num_pieces` pieces per
interval, beyond them exponential tails. Its loss, NeuralForecast's "log-likelihood", is
softplus(CRPS(z)) + log(scale) with z = (y - loc) / scale (the CRPS of the base spline
distribution in closed form, plus the affine transform's log-determinant).

The computation is composed of autodiff ops, so its gradient is exact; where NeuralForecast
compares values to pick a spline piece (boolean masks), the mask is a constant here too.
Raw outputs per point, in NeuralForecast's order: spline knots (K * P), spline heights
(K * P), beta_l, beta_r, quantile knots (Q), with Q quantiles, K = Q - 1, P = num_pieces.
"""

from __future__ import annotations

import numpy as np

from ndwork.autodiff import ops
from ndwork.autodiff.tensor import Tensor

TOL = 1e-4

add, sub, mul, div = ops.add, ops.sub, ops.mul, ops.divide


def _c(value, like: Tensor) -> Tensor:
    return ops.constant(np.asarray(value, dtype=like.data.dtype))


def n_outputs(n_quantiles: int, pieces: int) -> int:
    return 2 * (n_quantiles - 1) * pieces + 2 + n_quantiles


def param_names(n_quantiles: int, pieces: int) -> list[str]:
    knots = (n_quantiles - 1) * pieces
    return ([f"-spline_knot_{i + 1}" for i in range(knots)]
            + [f"-spline_height_{i + 1}" for i in range(knots)] + ["-beta_l", "-beta_r"]
            + [f"-quantile_knot_{i + 1}" for i in range(n_quantiles)])


def _spline(raw_pieces: Tensor, q: Tensor, q_plus: Tensor, pieces: int):
    """Knot positions and increments of the pieces between q and q_plus: (N, K, P) each."""
    n, k, _ = raw_pieces.shape
    share = div(add(ops.activation(raw_pieces, "softmax"), _c(TOL, q)),
                _c(1 + pieces * TOL, q))
    zero = _c(np.zeros((n, k, 1)), q)
    start = ops.concat([zero, ops.index(ops.cumsum(share, axis=-1),
                                        (slice(None), slice(None), slice(None, -1)))], axis=-1)
    width = ops.reshape(sub(q_plus, q), (n, k, 1))
    origin = ops.reshape(q, (n, k, 1))
    return add(mul(start, width), origin), mul(share, width)


class Spline:
    """The spline quantile function of raw outputs (N, n_outputs), as tensors."""

    def __init__(self, raw: Tensor, qk_x: np.ndarray, pieces: int):
        n = raw.shape[0]
        q = len(qk_x)
        k, kp = q - 1, (q - 1) * pieces
        cols = lambda a, b: ops.index(raw, (slice(None), slice(a, b)))  # noqa: E731
        knots = ops.reshape(cols(0, kp), (n, k, pieces))
        heights = ops.reshape(cols(kp, 2 * kp), (n, k, pieces))
        self.beta_l = add(ops.softplus(ops.reshape(cols(2 * kp, 2 * kp + 1), (n,))), _c(TOL, raw))
        self.beta_r = add(ops.softplus(ops.reshape(cols(2 * kp + 1, 2 * kp + 2), (n,))),
                          _c(TOL, raw))
        raw_qk = cols(2 * kp + 2, 2 * kp + 2 + q)
        steps = ops.concat([ops.index(raw_qk, (slice(None), slice(0, 1))),
                            add(ops.softplus(ops.index(raw_qk, (slice(None), slice(1, None)))),
                                _c(TOL, raw))], axis=1)
        self.qk_y = ops.cumsum(steps, axis=1)  # (N, Q)
        self.qk_x = np.broadcast_to(np.asarray(qk_x, raw.data.dtype), (n, q))
        self.pieces = pieces
        qy, qy_plus = (ops.index(self.qk_y, (slice(None), s)) for s in (slice(None, -1),
                                                                       slice(1, None)))
        qx, qx_plus = _c(self.qk_x[:, :-1], raw), _c(self.qk_x[:, 1:], raw)
        self.qy, self.qy_plus = qy, qy_plus
        self.sk_y, self.delta_y = _spline(heights, qy, qy_plus, pieces)
        self.sk_x, self.delta_x = _spline(knots, qx, qx_plus, pieces)
        last = _c(self.qk_x[:, 1:, None], raw)
        self.sk_x_plus = ops.concat([ops.index(self.sk_x, (slice(None), slice(None),
                                                           slice(1, None))), last], axis=-1)
        # tails: quantile a log(alpha) + b on the left, a log(1 - alpha) + b on the right
        self.x_l, self.x_r = self.qk_x[:, 0], self.qk_x[:, -1]
        self.y_l = ops.index(self.qk_y, (slice(None), 0))
        self.y_r = ops.index(self.qk_y, (slice(None), -1))
        self.a_l = div(_c(1.0, raw), self.beta_l)
        self.b_l = add(mul(self.a_l, _c(-np.log(self.x_l), raw)), self.y_l)
        self.a_r = div(_c(-1.0, raw), self.beta_r)
        self.b_r = add(mul(self.a_r, _c(-np.log(1 - self.x_r), raw)), self.y_r)

    # --- the CRPS of the base distribution at z (N,) -------------------------------------
    def crps(self, z: np.ndarray) -> Tensor:
        return add(add(self._crps_left(z), self._crps_right(z)), self._crps_spline(z))

    def _crps_left(self, z):
        a, b, x, like = self.a_l, self.b_l, self.x_l, self.a_l
        zc = _c(z, like)
        alpha = ops.exp(ops.minimum(div(sub(zc, b), a), _c(np.log(x), like)))
        term1 = mul(sub(zc, b), add(_c(x * x - 2 * x, like), mul(_c(2.0, like), alpha)))
        term2 = mul(a, _c(x * x * (-np.log(x) + 0.5), like))
        below = mul(_c(2.0, like), add(mul(a, _c(x * (np.log(x) - 1), like)),
                                       mul(alpha, add(sub(b, zc), a))))
        inside = ops.select(z < self.y_l.data, below, _c(np.zeros_like(z), like))
        return add(term1, add(term2, inside))

    def _crps_right(self, z):
        a, b, x, like = self.a_r, self.b_r, self.x_r, self.a_r
        zc = _c(z, like)
        alpha = sub(_c(1.0, like), ops.exp(ops.minimum(div(sub(zc, b), a),
                                                        _c(np.log(1 - x), like))))
        term1 = mul(sub(zc, b), add(_c(-1 - x * x, like), mul(_c(2.0, like), alpha)))
        term2 = mul(a, add(_c(-0.5 * (x + 1) ** 2 + (x * x - 1) * np.log(1 - x), like),
                           mul(_c(2.0, like), alpha)))
        above = mul(_c(2.0, like), mul(sub(_c(1.0, like), alpha), sub(zc, b)))
        within = mul(a, _c(2 * (1 - x) * np.log(1 - x), like))
        return add(term1, add(term2, ops.select(z > self.y_r.data, above, within)))

    def _cdf_spline(self, z):
        """The spline's CDF at z per interval (N, K), clipped to each interval."""
        like = self.sk_x
        zc = _c(z[:, None], like)
        qx, qx_plus = _c(self.qk_x[:, :-1], like), _c(self.qk_x[:, 1:], like)
        if self.pieces > 1:
            knots = self._quantile_spline(self.sk_x.data)  # the spline at its knots (N, K, P)
            reached = knots < z[:, None, None]
            next_reached = np.concatenate([reached[..., 1:], np.zeros_like(reached[..., :1])],
                                          axis=-1)
            only = (reached & ~next_reached).astype(like.data.dtype)
            passed = ops.total(mul(_c(next_reached.astype(like.data.dtype), like),
                                   self.delta_y), axis=-1)
            slope = ops.total(mul(_c(only, like), div(self.delta_x, self.delta_y)), axis=-1)
            start = ops.total(mul(_c(only, like), self.sk_x), axis=-1)
            alpha = add(start, mul(sub(sub(zc, self.qy), passed), slope))
        else:
            alpha = add(qx, mul(div(sub(zc, self.qy), sub(self.qy_plus, self.qy)),
                                sub(qx_plus, qx)))
        return ops.minimum(ops.maximum(alpha, qx), qx_plus)

    def _quantile_spline(self, alpha: np.ndarray) -> np.ndarray:
        """Arrays: the spline of each interval at alpha (N, K, m) -> (N, K, m)."""
        sk, dx, dy = self.sk_x.data, self.delta_x.data, self.delta_y.data
        frac = np.clip((alpha[..., None] - sk[:, :, None, :]) / dx[:, :, None, :], 0, 1)
        return self.qy.data[..., None] + (frac * dy[:, :, None, :]).sum(axis=-1)

    def _crps_spline(self, z):
        like = self.sk_x
        n, k, p = self.sk_x.shape
        zc = _c(z[:, None], like)
        qx, qx_plus = _c(self.qk_x[:, :-1], like), _c(self.qk_x[:, 1:], like)
        alpha = self._cdf_spline(z)  # (N, K)
        alpha3 = ops.reshape(alpha, (n, k, 1))
        sk, skp = self.sk_x, self.sk_x_plus
        r = ops.minimum(ops.maximum(alpha3, sk), skp)
        two, third = _c(2.0, like), _c(1.0 / 3.0, like)
        sk2, skp2 = mul(sk, sk), mul(skp, skp)
        coeff1 = add(add(add(mul(_c(-2.0 / 3.0, like), mul(skp2, skp)), mul(sk, skp2)), skp2),
                     sub(sub(sub(mul(two, mul(sk, r)), mul(r, r)), mul(third, mul(sk2, sk))),
                         mul(two, mul(sk, skp))))
        qxp3 = _c(self.qk_x[:, 1:, None], like)
        coeff2 = add(sub(skp2, mul(two, ops.maximum(alpha3, skp))),
                     sub(mul(two, qxp3), mul(qxp3, qxp3)))
        result = add(add(mul(sub(mul(qx_plus, qx_plus), mul(qx, qx)), sub(zc, self.qy)),
                         mul(mul(two, sub(qx_plus, alpha)), sub(self.qy, zc))),
                     add(ops.total(mul(div(self.delta_y, self.delta_x), coeff1), axis=-1),
                         ops.total(mul(self.delta_y, coeff2), axis=-1)))
        return ops.total(result, axis=-1)

    # --- sampling ------------------------------------------------------------------------
    def quantile(self, alpha: np.ndarray) -> np.ndarray:
        """The base distribution's quantiles at alpha (N, m) (arrays)."""
        left = self.a_l.data[:, None] * np.log(alpha) + self.b_l.data[:, None]
        right = self.a_r.data[:, None] * np.log(1 - alpha) + self.b_r.data[:, None]
        out = np.where(alpha < self.x_l[:, None], left, right)
        spline = self._quantile_spline(np.broadcast_to(alpha[:, None, :], (
            alpha.shape[0], self.sk_x.shape[1], alpha.shape[1])))  # (N, K, m)
        for k in range(spline.shape[1]):
            inside = (self.qk_x[:, k, None] <= alpha) & (alpha < self.qk_x[:, k + 1, None])
            out = np.where(inside, spline[:, k], out)
        return out


def nll(raw: Tensor, y: np.ndarray, loc: np.ndarray, scale: np.ndarray, qk_x: np.ndarray,
        pieces: int) -> Tensor:
    """NeuralForecast's ISQF negative log-likelihood per point (N,): softplus(CRPS(z)) +
    log(scale), raw (N, n_outputs)."""
    z = ((y - loc) / scale).astype(raw.data.dtype)
    crps = Spline(raw, qk_x, pieces).crps(z)
    return add(ops.softplus(crps), ops.constant(np.log(scale).astype(raw.data.dtype)))


def sample(raw: np.ndarray, loc: np.ndarray, scale: np.ndarray, qk_x: np.ndarray, pieces: int,
           n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws per point: raw (N, n_outputs), loc and scale (N,) -> (N, n)."""
    spline = Spline(Tensor(raw.astype(np.float64)), qk_x, pieces)
    alpha = rng.random((raw.shape[0], n))
    return loc[:, None] + scale[:, None] * spline.quantile(alpha)
