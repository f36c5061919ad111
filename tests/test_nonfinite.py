"""Every kernel propagates NaN and inf as its numpy reference does.

A compiled kernel that turned a NaN into a finite number would hide a diverging run
from the trainer's finiteness check. Each case puts NaN, +inf and -inf (and values
whose exp overflows) into one input and compares, output by output: the compiled
kernel is non-finite exactly where the reference is, with the same sign where both
are infinite. (NaN against inf is allowed: inf times a derivative that underflows to
0 in one path and to 1e-11 in the other is NaN in one and inf in the other.)
"""

import numpy as np
import pytest

from ndwork.kernels import REGISTRY, compiled, reference
from ndwork.kernels.likelihoods import N_PARAMS
from ndwork.kernels.losses import POINT_LOSSES
from ndwork.kernels.scalers import SCALERS

SPECIALS = (np.nan, np.inf, -np.inf)


def poisoned(rng, shape, scale=1.0):
    """A float32 array of shape with NaN, +inf and -inf at fixed places (and ordinary
    values elsewhere, large ones included so that exp overflows)."""
    x = (rng.normal(0, scale, shape)).astype(np.float32)
    flat = x.reshape(-1)
    flat[:: max(1, flat.size // 7)][:3] = SPECIALS
    if flat.size > 8:
        flat[5], flat[6] = 100.0, -100.0  # exp(+-100) over- and underflows float32
    return x


def activation_cases(rng):
    for kind in ("relu", "tanh", "sigmoid", "gelu", "elu", "softmax"):
        x = poisoned(rng, (6, 11), 3)
        yield f"{kind}_forward", (x,)
        clean = rng.normal(0, 3, (6, 11)).astype(np.float32)
        saved = reference("gelu_train_forward" if kind == "gelu" else f"{kind}_forward")(clean)
        saved = saved[1] if kind == "gelu" else saved  # gelu keeps its slope
        yield f"{kind}_backward", (saved, poisoned(rng, (6, 11)))
        yield f"{kind}_backward", (poisoned(rng, (6, 11), 3), rng.normal(size=(6, 11)).astype(
            np.float32))
    yield "gelu_train_forward", (poisoned(rng, (6, 11), 3),)
    yield "glu_forward", (poisoned(rng, (6, 22), 3),)  # GLU backward recomputes from x
    yield "glu_backward", (poisoned(rng, (6, 22), 3), rng.normal(size=(6, 11)).astype(np.float32))
    yield "glu_backward", (rng.normal(0, 3, (6, 22)).astype(np.float32), poisoned(rng, (6, 11)))


def linear_cases(rng):
    w = rng.normal(size=(7, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    for activation in ("identity", "relu", "tanh", "sigmoid"):
        x = poisoned(rng, (9, 7))
        yield "linear_forward", (x, w, b, activation)
        clean = rng.normal(size=(9, 7)).astype(np.float32)
        y = reference("linear_forward")(clean, w, b, activation)
        yield "linear_backward", (clean, w, y, poisoned(rng, y.shape), activation)


def loss_cases(rng):
    y = rng.normal(size=(5, 6)).astype(np.float32) + 3
    mask = np.ones_like(y)
    for kind in POINT_LOSSES:
        yield "point_loss", (kind, poisoned(rng, y.shape), y, mask, 0.3)
    yield "mqloss", (poisoned(rng, (5, 6, 3)), y, mask, np.array([0.1, 0.5, 0.9]))
    counts = rng.poisson(3, 40).astype(np.float32)
    loc, scale = np.full(40, 2.0, np.float32), np.full(40, 1.5, np.float32)
    for kind, n_params in N_PARAMS.items():
        target = (counts > 2).astype(np.float32) if kind == "bernoulli" else counts
        yield "nll", (kind, poisoned(rng, (40, n_params), 3), target, loc, scale, 1.5)


def other_cases(rng):
    x = poisoned(rng, (6, 12))
    yield "maxpool_forward", (x, 3)
    _, argmax = reference("maxpool_forward")(rng.normal(size=(6, 12)).astype(np.float32), 3)
    yield "maxpool_backward", (poisoned(rng, (6, 4)), argmax, 12)
    yield "interpolate_forward", (poisoned(rng, (6, 5)), 12)
    yield "interpolate_backward", (poisoned(rng, (6, 12)), 5)
    yield "moving_average_forward", (poisoned(rng, (2, 12, 3)), 5)
    yield "moving_average_backward", (poisoned(rng, (2, 12, 3)), 5)
    gamma, beta = np.ones(9, np.float32), np.zeros(9, np.float32)
    yield "layernorm_forward", (poisoned(rng, (4, 9)), gamma, beta)
    clean = rng.normal(size=(4, 9)).astype(np.float32)
    _, mean, rstd = reference("layernorm_forward")(clean, gamma, beta)
    yield "layernorm_backward", (clean, gamma, mean, rstd, poisoned(rng, (4, 9)))
    p = rng.normal(size=40).astype(np.float32)
    yield "adam_update", (p, poisoned(rng, (40,)), np.zeros_like(p), np.zeros_like(p), 1, 1e-3,
                          0.9, 0.999, 1e-8, 0.0, False)
    yield "sgd_update", (p, poisoned(rng, (40,)), np.zeros_like(p), 0.1, 0.9, 0.0)
    for kind in SCALERS:
        yield "scaler_statistics", (kind, poisoned(rng, (6, 12)), np.ones((6, 12), np.float32))
    x = poisoned(rng, (6, 12))
    yield "round_bf16", (x,)
    yield "round_fp16", (x * 1e4,)  # some finite values beyond float16's range: inf
    yield "widen_bf16", (reference("round_bf16")(x),)
    yield "widen_fp16", (reference("round_fp16")(x),)
    yield "bf16_weights_matmul", (x, reference("round_bf16")(rng.normal(size=(12, 7))))


def recurrent_cases(rng):
    h = 4
    for cell, gates, extra in (("rnn", 1, ("tanh",)), ("lstm", 4, ()), ("gru", 3, None)):
        w_hh = rng.normal(size=(h, gates * h)).astype(np.float32)
        if extra is None:
            extra = (rng.normal(size=gates * h).astype(np.float32),)
        xw = poisoned(rng, (3, 5, gates * h), 3)
        yield f"{cell}_forward", (xw, w_hh, *extra)
        clean = rng.normal(size=(3, 5, gates * h)).astype(np.float32)
        saved = reference(f"{cell}_forward")(clean, w_hh, *extra)
        rest = extra if cell == "rnn" else ()
        yield f"{cell}_backward", (w_hh, *saved, poisoned(rng, (3, 5, h)), *rest)
    w_hh = rng.normal(size=(h, 4 * h)).astype(np.float32)  # many windows: per-step BLAS
    yield "lstm_forward", (poisoned(rng, (3, 130, 4 * h), 3), w_hh)
    yield "gru_forward", (poisoned(rng, (3, 130, 3 * h), 3), w_hh[:, :3 * h].copy(),
                          rng.normal(size=3 * h).astype(np.float32))


def convolution_cases(rng):
    w = rng.normal(size=(2, 3, 4)).astype(np.float32)
    yield "causal_conv1d_forward", (poisoned(rng, (2, 9, 3)), w, 2)
    yield "causal_conv1d_backward", (rng.normal(size=(2, 9, 3)).astype(np.float32), w, 2,
                                     poisoned(rng, (2, 9, 4)))
    w2 = rng.normal(size=(3, 5, 3, 4)).astype(np.float32)
    yield "conv2d_forward", (poisoned(rng, (2, 4, 6, 3)), w2)
    yield "conv2d_backward", (rng.normal(size=(2, 4, 6, 3)).astype(np.float32), w2,
                              poisoned(rng, (2, 4, 6, 4)))


def autocorrelation_cases(rng):
    clean = rng.normal(size=(2, 9, 3)).astype(np.float32)
    yield "lag_correlation_forward", (poisoned(rng, (2, 9, 3)), clean)
    yield "lag_correlation_backward", (clean, clean + 1, poisoned(rng, (2, 9)))
    w, delays = rng.normal(size=(2, 4)).astype(np.float32), np.array([[0, 3, 5, 8], [1, 2, 4, 7]])
    yield "delay_aggregate_forward", (poisoned(rng, (2, 9, 3)), w, delays)
    yield "delay_aggregate_backward", (clean, w, delays, poisoned(rng, (2, 9, 3)))


def xlstm_cases(rng):
    r = rng.normal(size=(2, 3, 12)).astype(np.float32) / 2
    b = rng.normal(size=24).astype(np.float32)
    yield "slstm_forward", (poisoned(rng, (4, 5, 24), 3), r, b)
    saved = reference("slstm_forward")(rng.normal(size=(4, 5, 24)).astype(np.float32), r, b)
    yield "slstm_backward", (r, *saved, poisoned(rng, (4, 5, 6)))
    q, k, v = (rng.normal(size=(2, 6, 2, 4)).astype(np.float32) for _ in range(3))
    gates = rng.normal(size=(2, 6, 2)).astype(np.float32)
    yield "mlstm_forward", (poisoned(rng, q.shape), k, v, gates, gates + 1)
    yield "mlstm_forward", (q, k, v, poisoned(rng, gates.shape, 3), gates + 1)
    yield "mlstm_forward", (q, k, v, gates, poisoned(rng, gates.shape, 3))
    yield "mlstm_backward", (q, k, v, gates, gates + 1, poisoned(rng, q.shape))


def kan_cases(rng):
    grid = np.arange(-3, 9) * 0.4 - 1
    yield "bspline_basis", (poisoned(rng, (4, 5)), grid, 3)
    yield "power_basis", (poisoned(rng, (4, 5)), 4)
    yield "jacobi_basis", (poisoned(rng, (4, 5)), 5, 1.0, 1.0)
    translation = rng.normal(0, 0.3, (3, 5)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, (3, 5)).astype(np.float32)
    weights, window = rng.normal(size=(5, 3)).astype(np.float32), np.ones(5, np.float32)
    for code in range(5):
        yield "wavelet_layer_forward", (poisoned(rng, (6, 5)), translation, scale, weights,
                                        window, code)
    yield "wavelet_layer_backward", (rng.normal(size=(6, 5)).astype(np.float32), translation,
                                     scale, weights, window, 0, poisoned(rng, (6, 3)))


def cases():
    rng = np.random.default_rng(0)
    found = [c for make in (activation_cases, linear_cases, loss_cases, other_cases,
                            recurrent_cases, convolution_cases, autocorrelation_cases,
                            xlstm_cases, kan_cases)
             for c in make(rng)]
    return [pytest.param(name, args, id=f"{name}-{i}") for i, (name, args) in enumerate(found)]


def outputs(result, args):
    """The arrays a kernel produced: its return values, and for the in-place optimizer
    updates the arrays it updated."""
    if result is None:
        return [a for a in args if isinstance(a, np.ndarray)][:1] + [args[2]]
    result = result if isinstance(result, tuple) else (result,)
    return [np.asarray(r).astype(np.float32) if np.asarray(r).itemsize == 2 else np.asarray(r)
            for r in result if r is not None]  # low-precision outputs: their values


@pytest.mark.parametrize("name,args", cases())
def test_kernel_propagates_nan_and_inf_as_its_reference(name, args):
    copies = [[a.copy() if isinstance(a, np.ndarray) else a for a in args] for _ in range(2)]
    with np.errstate(all="ignore"):
        got = outputs(compiled(name)(*copies[0]), copies[0])
        expected = outputs(reference(name)(*copies[1]), copies[1])
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(e),
                                      err_msg=f"output {k}: non-finite positions")
        both_inf = np.isinf(g) & np.isinf(e)
        np.testing.assert_array_equal(np.sign(g[both_inf]), np.sign(e[both_inf]),
                                      err_msg=f"output {k}: signs of infinities")


def test_every_kernel_with_float_inputs_has_a_nonfinite_case():
    covered = {name for name, _ in (p.values for p in cases())}
    assert covered == set(REGISTRY) - {"dropout_keep"}  # integer keys in, no float input
