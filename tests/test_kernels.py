"""Every numba kernel against its numpy reference, float32, same inputs."""

import numba
import numpy as np
import pytest
from conftest import assert_close_f32

from ndwork.kernels import REGISTRY, compiled, recurrent, reference
from ndwork.kernels.losses import POINT_LOSSES
from ndwork.kernels.scalers import SCALERS


def both(name, *args):
    return compiled(name)(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]), \
        reference(name)(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])


@pytest.mark.parametrize("kind", ["relu", "tanh", "sigmoid", "gelu", "elu", "softmax"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 300)])
def test_activation_forward_backward(kind, shape, rng):
    x = rng.normal(0, 3, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    y, y_ref = both(f"{kind}_forward", x)
    assert_close_f32(y, y_ref)
    saved = y_ref
    if kind == "gelu":  # training keeps the slope, written by the same pass as y
        (y_train, slope), (_, saved) = both("gelu_train_forward", x)
        np.testing.assert_array_equal(y_train, y)
        assert_close_f32(slope, saved)
    assert_close_f32(*both(f"{kind}_backward", saved, dy))


@pytest.mark.parametrize("shape", [(1, 2), (7, 26), (3, 64, 256)])
def test_glu(shape, rng):
    x = rng.normal(0, 3, shape).astype(np.float32)
    dy = rng.normal(size=(*shape[:-1], shape[-1] // 2)).astype(np.float32)
    assert_close_f32(*both("glu_forward", x))
    assert_close_f32(*both("glu_backward", x, dy))


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("n,fan_in,fan_out", [(1, 1, 1), (33, 24, 70), (256, 128, 64)])
def test_linear(activation, n, fan_in, fan_out, rng):
    x = rng.normal(size=(n, fan_in)).astype(np.float32)
    w = rng.normal(size=(fan_in, fan_out)).astype(np.float32) / np.sqrt(fan_in)
    b = rng.normal(size=fan_out).astype(np.float32)
    y, y_ref = both("linear_forward", x, w, b, activation)
    assert_close_f32(y, y_ref)
    dy = rng.normal(size=y.shape).astype(np.float32)
    for got, ref in zip(*both("linear_backward", x, w, y_ref, dy, activation), strict=True):
        assert_close_f32(got, ref)
    dx, _, _ = compiled("linear_backward")(x, w, y_ref, dy, activation, False)
    assert dx is None


@pytest.mark.parametrize("kind", list(POINT_LOSSES))
def test_point_losses(kind, rng):
    y = rng.normal(size=(50, 12)).astype(np.float32)
    y[0, :3] = 0  # MAPE's zero-division guard
    y_hat = (y + rng.normal(size=y.shape)).astype(np.float32)
    mask = (rng.random(y.shape) > 0.2).astype(np.float32)
    param = 0.3 if kind == "quantile" else 0.7
    (v, g), (v_ref, g_ref) = both("point_loss", kind, y_hat, y, mask, param)
    assert v == pytest.approx(v_ref, rel=1e-5)
    assert_close_f32(g, g_ref)


def test_empty_mask_gives_zero_loss(rng):
    y = rng.normal(size=(4, 3)).astype(np.float32)
    for impl in (compiled, reference):
        value, grad = impl("point_loss")("mae", y + 1, y, np.zeros_like(y))
        assert value == 0 and not grad.any()


def test_mqloss(rng):
    y = rng.normal(size=(40, 12)).astype(np.float32)
    y_hat = (y[..., None] + rng.normal(size=(40, 12, 5))).astype(np.float32)
    mask = np.ones_like(y)
    q = np.array([0.05, 0.1, 0.5, 0.9, 0.95])
    (v, g), (v_ref, g_ref) = both("mqloss", y_hat, y, mask, q)
    assert v == pytest.approx(v_ref, rel=1e-5)
    assert_close_f32(g, g_ref)


@pytest.mark.parametrize("length,kernel_size", [(1, 1), (24, 2), (25, 2), (96, 8), (7, 3)])
def test_maxpool(length, kernel_size, rng):
    x = rng.normal(size=(9, length)).astype(np.float32)
    (y, arg), (y_ref, arg_ref) = both("maxpool_forward", x, kernel_size)
    assert_close_f32(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    dy = rng.normal(size=y.shape).astype(np.float32)
    assert_close_f32(*both("maxpool_backward", dy, arg_ref, length))


@pytest.mark.parametrize("n_in,n_out", [(1, 12), (3, 12), (6, 12), (12, 12), (5, 7), (30, 8)])
def test_interpolate(n_in, n_out, rng):
    x = rng.normal(size=(11, n_in)).astype(np.float32)
    assert_close_f32(*both("interpolate_forward", x, n_out))
    dy = rng.normal(size=(11, n_out)).astype(np.float32)
    assert_close_f32(*both("interpolate_backward", dy, n_in))


@pytest.mark.parametrize("shape,window", [((3, 10, 4), 5), ((2, 7), 25), ((2, 1, 3), 3),
                                          ((4, 96, 32), 25), ((2, 5, 2, 3), 1)])
def test_moving_average(shape, window, rng):
    x = rng.normal(size=shape).astype(np.float32)
    assert_close_f32(*both("moving_average_forward", x, window))
    assert_close_f32(*both("moving_average_backward", x, window))


def test_moving_average_is_the_edge_padded_mean():
    """Against the definition: the series' ends repeated (window - 1) / 2 times, then
    each point the mean of the window centered on it (and the adjoint: <A x, g> =
    <x, A' g>)."""
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(2, 2, 6, 3))
    padded = np.concatenate([x[:, :1]] * 3 + [x] + [x[:, -1:]] * 3, axis=1)
    direct = np.stack([padded[:, t:t + 7].mean(axis=1) for t in range(6)], axis=1)
    for impl in (compiled, reference):
        np.testing.assert_allclose(impl("moving_average_forward")(x, 7), direct, rtol=1e-12)
        np.testing.assert_allclose(np.sum(impl("moving_average_backward")(g, 7) * x),
                                   np.sum(g * direct), rtol=1e-12)


def test_interpolate_matches_torch_semantics():
    # torch.nn.functional.interpolate([0, 1, 2], size=6, mode="linear") (align_corners=False)
    x = np.array([[0.0, 1.0, 2.0]], np.float32)
    expected = [0.0, 0.25, 0.75, 1.25, 1.75, 2.0]
    for impl in (compiled, reference):
        np.testing.assert_allclose(impl("interpolate_forward")(x, 6)[0], expected, atol=1e-7)


@pytest.mark.parametrize("rows,cols", [(1, 1), (5, 17), (64, 512)])
def test_layernorm(rows, cols, rng):
    x = rng.normal(2, 3, (rows, cols)).astype(np.float32)
    gamma = rng.normal(size=cols).astype(np.float32)
    beta = rng.normal(size=cols).astype(np.float32)
    out, out_ref = both("layernorm_forward", x, gamma, beta)
    for got, ref in zip(out, out_ref, strict=True):
        assert_close_f32(got, ref)
    _, mean, rstd = out_ref
    dy = rng.normal(size=x.shape).astype(np.float32)
    for got, ref in zip(*both("layernorm_backward", x, gamma, mean, rstd, dy), strict=True):
        assert_close_f32(got, ref, rtol=2e-5 if cols > 1 else 1e-5)


@pytest.mark.parametrize("decoupled,weight_decay", [(False, 0.0), (False, 0.1), (True, 0.01)])
def test_adam_update(decoupled, weight_decay, rng):
    p = rng.normal(size=1000).astype(np.float32)
    states = [[p.copy(), np.zeros_like(p), np.zeros_like(p)] for _ in range(2)]
    for step in range(1, 6):
        g = rng.normal(size=p.size).astype(np.float32)
        for impl, (pp, m, v) in zip((compiled, reference), states, strict=True):
            impl("adam_update")(pp, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for a, b in zip(*states, strict=True):
        assert_close_f32(a, b)
    assert not np.allclose(states[0][0], p)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.01)])
def test_sgd_update(momentum, weight_decay, rng):
    p = rng.normal(size=500).astype(np.float32)
    states = [[p.copy(), np.zeros_like(p)] for _ in range(2)]
    for _ in range(4):
        g = rng.normal(size=p.size).astype(np.float32)
        for impl, (pp, buf) in zip((compiled, reference), states, strict=True):
            impl("sgd_update")(pp, g, buf, 0.1, momentum, weight_decay)
    for a, b in zip(*states, strict=True):
        assert_close_f32(a, b)


@pytest.mark.parametrize("kind", SCALERS)
def test_scalers(kind, rng):
    x = rng.normal(5, 2, (30, 24)).astype(np.float32)
    x[0] = 3.0  # a constant window: scale falls back to 1
    x[1, ::2] = 7.0  # median absolute deviation 0 for robust: falls back to std
    mask = np.ones_like(x)
    mask[2, :20] = 0
    mask[3] = 0  # a window with nothing observed
    (shift, scale), (shift_ref, scale_ref) = both("scaler_statistics", kind, x, mask)
    assert_close_f32(shift, shift_ref)
    assert_close_f32(scale, scale_ref)
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_keep(p, dtype):
    from ndwork.kernels.noise import mix64

    keys = mix64(np.arange(300, dtype=np.uint64))
    (keep, keep_ref) = both("dropout_keep", keys, 257, p, np.dtype(dtype))
    np.testing.assert_array_equal(keep, keep_ref)  # integer hashing: bit-identical
    assert keep.dtype == dtype
    assert set(np.unique(keep)) <= {0.0, dtype(1) / dtype(1 - p)}
    assert abs((keep == 0).mean() - p) < 0.01  # 77,100 draws: 4 standard errors at p=0.5


def recurrent_case(cell, t, b, h, rng):
    """The forward arguments of one recurrent kernel case (time-major)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    xw = rng.normal(size=(t, b, gates * h)).astype(np.float32)
    w_hh = (rng.normal(size=(h, gates * h)) / np.sqrt(h)).astype(np.float32)
    extra = {"rnn": ("tanh",), "lstm": (), "gru": (rng.normal(size=gates * h).astype(
        np.float32),)}[cell]
    return (xw, w_hh, *extra)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("t,b,h", [(1, 1, 1), (7, 3, 5), (50, 16, 32), (4, 1, 3),
                                   (12, 20, 32),  # windows x hidden > 512: per-step BLAS
                                   (3, 300, 128)])  # steps split between threads
def test_recurrent_kernels(cell, t, b, h, rng):
    if b == 300 and numba.get_num_threads() > 1:  # the case runs what it means to
        assert recurrent._parts(b, h) > 1
    args = recurrent_case(cell, t, b, h, rng)
    saved, saved_ref = both(f"{cell}_forward", *args)
    for got, ref in zip(saved, saved_ref, strict=True):
        assert_close_f32(got, ref)
    dh = rng.normal(size=saved_ref[0].shape).astype(np.float32)
    rest = ("tanh",) if cell == "rnn" else ()
    for got, ref in zip(*both(f"{cell}_backward", args[1], *saved_ref, dh, *rest), strict=True):
        assert_close_f32(got, ref)
    if cell == "rnn":  # the relu cell too
        relu_args = (args[0], args[1], "relu")
        (h_seq,), (h_ref,) = both("rnn_forward", *relu_args)
        assert_close_f32(h_seq, h_ref)
        for got, ref in zip(*both("rnn_backward", args[1], h_ref, dh, "relu"), strict=True):
            assert_close_f32(got, ref)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("t,b,h", [(1, 1, 1), (7, 3, 5), (12, 20, 32)])
def test_recurrent_kernels_from_a_given_state(cell, t, b, h, rng):
    args = recurrent_case(cell, t, b, h, rng)
    state = [rng.normal(size=(b, h)).astype(np.float32) for _ in range(2 if cell == "lstm" else 1)]
    if cell == "lstm":
        args = (*args, None)  # no projection
    saved, saved_ref = both(f"{cell}_forward", *args, *state)
    for got, ref in zip(saved, saved_ref, strict=True):
        assert_close_f32(got, ref)
    if cell == "rnn":  # decoding only (forward): its first step reads the state
        first = np.tanh(args[0][0] + state[0].astype(np.float64) @ args[1])
        assert_close_f32(saved[0][0], first)
        return
    dh = rng.normal(size=saved_ref[0].shape).astype(np.float32)
    extra = (None, *state, rng.normal(size=dh.shape).astype(np.float32)) if cell == "lstm" \
        else tuple(state)
    grads, grads_ref = both(f"{cell}_backward", args[1], *saved_ref, dh, *extra)
    assert len(grads) == len(grads_ref) == 4  # LSTM: dxw, dW_hh, dh0, dc0; GRU: db_hh, dh0
    for got, ref in zip(grads, grads_ref, strict=True):
        assert_close_f32(got, ref)


@pytest.mark.parametrize("b,t,c_in,c_out,kernel_size,dilation",
                         [(1, 1, 1, 1, 1, 1), (4, 24, 1, 16, 2, 1), (3, 30, 8, 8, 3, 4),
                          (2, 10, 4, 5, 2, 16)])
def test_causal_conv1d(b, t, c_in, c_out, kernel_size, dilation, rng):
    x = rng.normal(size=(b, t, c_in)).astype(np.float32)
    w = rng.normal(size=(kernel_size, c_in, c_out)).astype(np.float32)
    assert_close_f32(*both("causal_conv1d_forward", x, w, dilation))
    dy = rng.normal(size=(b, t, c_out)).astype(np.float32)
    for got, ref in zip(*both("causal_conv1d_backward", x, w, dilation, dy), strict=True):
        assert_close_f32(got, ref)


def test_causal_conv1d_is_causal_and_matches_a_direct_sum(rng):
    """Against the definition, element by element: y[t] sees x[t], x[t - d], ..."""
    x = rng.normal(size=(1, 12, 2))
    w = rng.normal(size=(3, 2, 1))
    for impl in (compiled, reference):
        y = impl("causal_conv1d_forward")(x, w, 2)
        for t in range(12):
            direct = sum(x[0, t - (2 - k) * 2] @ w[k] for k in range(3) if t - (2 - k) * 2 >= 0)
            np.testing.assert_allclose(y[0, t], direct, rtol=1e-12)


@pytest.mark.parametrize("t,b,h,proj", [(1, 1, 3, 1), (7, 3, 5, 2), (30, 16, 32, 4)])
def test_projected_lstm_kernels(t, b, h, proj, rng):
    """LSTM with PyTorch's proj_size: state and output h = (o * tanh(c)) @ W_hr."""
    xw = rng.normal(size=(t, b, 4 * h)).astype(np.float32)
    w_hh = (rng.normal(size=(proj, 4 * h)) / np.sqrt(proj)).astype(np.float32)
    w_hr = (rng.normal(size=(h, proj)) / np.sqrt(h)).astype(np.float32)
    saved, saved_ref = both("lstm_forward", xw, w_hh, w_hr)
    for got, ref in zip(saved, saved_ref, strict=True):
        assert_close_f32(got, ref)
    dh = rng.normal(size=(t, b, proj)).astype(np.float32)
    for got, ref in zip(*both("lstm_backward", w_hh, *saved_ref, dh, w_hr), strict=True):
        assert_close_f32(got, ref)


@pytest.mark.parametrize("t,b,heads,dh", [(1, 1, 1, 1), (7, 3, 2, 4), (24, 16, 4, 8)])
def test_slstm_kernels(t, b, heads, dh, rng):
    hidden = heads * dh
    xw = rng.normal(size=(t, b, 4 * hidden)).astype(np.float32)
    r = (rng.normal(size=(heads, dh, 4 * dh)) / np.sqrt(dh)).astype(np.float32)
    bias = rng.normal(size=4 * hidden).astype(np.float32)
    saved, saved_ref = both("slstm_forward", xw, r, bias)
    for got, ref in zip(saved, saved_ref, strict=True):
        assert_close_f32(got, ref)
    dy = rng.normal(size=(t, b, hidden)).astype(np.float32)
    for got, ref in zip(*both("slstm_backward", r, *saved_ref, dy), strict=True):
        assert_close_f32(got, ref)


@pytest.mark.parametrize("b,heads,s,d", [(1, 1, 1, 1), (2, 3, 6, 4), (4, 4, 24, 64)])
@pytest.mark.parametrize("floor", [False, True])
def test_mlstm_kernels(b, heads, s, d, floor, rng):
    """floor: input gates so small that the normalizer takes its exp(-m) side."""
    q, k, v = (rng.normal(size=(b, s, heads, d)).astype(np.float32) for _ in range(3))
    ig = (rng.normal(size=(b, s, heads)) - (6 if floor else 0)).astype(np.float32)
    fg = (rng.normal(size=(b, s, heads)) + 2).astype(np.float32)
    assert_close_f32(*both("mlstm_forward", q, k, v, ig, fg))
    dh = rng.normal(size=q.shape).astype(np.float32)
    for got, ref in zip(*both("mlstm_backward", q, k, v, ig, fg, dh), strict=True):
        assert_close_f32(got, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kan_bases(dtype, rng):
    x = rng.uniform(-1.3, 1.3, (17, 5)).astype(dtype)
    grid = np.arange(-3, 9) * 0.4 - 1
    for name, args in (("bspline_basis", (grid, 3)), ("bspline_basis", (grid[1:-1], 2)),
                       ("power_basis", (4,)), ("jacobi_basis", (6, 1.0, 1.0)),
                       ("jacobi_basis", (3, 0.5, 2.0))):
        (values, slopes), (values_ref, slopes_ref) = both(name, x, *args)
        assert values.dtype == dtype and values.shape == values_ref.shape
        assert_close_f32(values, values_ref)
        assert_close_f32(slopes, slopes_ref)


@pytest.mark.parametrize("wavelet", [0, 1, 2, 3, 4])
def test_wavelet_layer_kernels(wavelet, rng):
    x = rng.uniform(-2, 2, (9, 6)).astype(np.float32)
    translation = rng.normal(0, 0.3, (4, 6)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, (4, 6)).astype(np.float32)
    weights, window = rng.normal(size=(6, 4)).astype(np.float32), np.hamming(6).astype(np.float32)
    args = (x, translation, scale, weights, window, wavelet)
    y, y_ref = both("wavelet_layer_forward", *args)
    assert_close_f32(y, y_ref)
    dy = rng.normal(size=y.shape).astype(np.float32)
    for got, ref in zip(*both("wavelet_layer_backward", *args, dy), strict=True):
        assert got.dtype == np.float32
        assert_close_f32(got, ref)


@pytest.mark.parametrize("b,rows,cols,c_in,c_out,kh,kw",
                         [(1, 1, 1, 1, 1, 1, 1), (2, 3, 12, 4, 5, 5, 11), (3, 6, 6, 8, 8, 3, 3),
                          (1, 2, 7, 3, 2, 3, 13)])
def test_conv2d(b, rows, cols, c_in, c_out, kh, kw, rng):
    x = rng.normal(size=(b, rows, cols, c_in)).astype(np.float32)
    w = rng.normal(size=(kh, kw, c_in, c_out)).astype(np.float32)
    assert_close_f32(*both("conv2d_forward", x, w))
    dy = rng.normal(size=(b, rows, cols, c_out)).astype(np.float32)
    for got, ref in zip(*both("conv2d_backward", x, w, dy), strict=True):
        assert_close_f32(got, ref)


def test_conv2d_matches_a_direct_sum(rng):
    """Against the definition, zero padding included."""
    x, w = rng.normal(size=(1, 3, 4, 2)), rng.normal(size=(3, 5, 2, 1))
    for impl in (compiled, reference):
        y = impl("conv2d_forward")(x, w)
        for r in range(3):
            for c in range(4):
                direct = sum(x[0, r + a - 1, c + e - 2] @ w[a, e] for a in range(3)
                             for e in range(5) if 0 <= r + a - 1 < 3 and 0 <= c + e - 2 < 4)
                np.testing.assert_allclose(y[0, r, c], direct, rtol=1e-12)


@pytest.mark.parametrize("b,length,channels,k", [(1, 1, 1, 1), (3, 24, 16, 9), (2, 37, 5, 4)])
def test_autocorrelation_kernels(b, length, channels, k, rng):
    q, v = rng.normal(size=(2, b, length, channels)).astype(np.float32)
    key = rng.normal(size=(b, length, channels)).astype(np.float32)
    assert_close_f32(*both("lag_correlation_forward", q, key))
    g = rng.normal(size=(b, length)).astype(np.float32)
    for got, ref in zip(*both("lag_correlation_backward", q, key, g), strict=True):
        assert got.dtype == np.float32
        assert_close_f32(got, ref)
    w = rng.normal(size=(b, k)).astype(np.float32)
    delays = np.stack([rng.permutation(length)[:k] if k <= length else rng.integers(0, length, k)
                       for _ in range(b)])
    assert_close_f32(*both("delay_aggregate_forward", v, w, delays))
    dy = rng.normal(size=v.shape).astype(np.float32)
    for got, ref in zip(*both("delay_aggregate_backward", v, w, delays, dy), strict=True):
        assert_close_f32(got, ref)


def test_lag_correlation_is_the_circular_cross_correlation(rng):
    """Against the definition: r[tau] = mean_c sum_t q[(t + tau) % L, c] k[t, c]."""
    q, k = rng.normal(size=(2, 1, 7, 3))
    for impl in (compiled, reference):
        r = impl("lag_correlation_forward")(q, k)
        for tau in range(7):
            direct = np.mean([sum(q[0, (t + tau) % 7, c] * k[0, t, c] for t in range(7))
                              for c in range(3)])
            np.testing.assert_allclose(r[0, tau], direct, rtol=1e-12)


def test_every_kernel_has_a_reference_and_a_test():
    # "nll": tests/test_probabilistic.py
    tested = {"slstm", "mlstm", "causal_conv1d", "dropout_keep", "rnn", "lstm", "gru", "relu",
              "tanh", "sigmoid", "gelu", "gelu_train", "elu", "glu", "softmax", "linear",
              "point_loss", "mqloss", "nll", "maxpool", "interpolate", "moving_average",
              "layernorm", "adam_update", "sgd_update", "scaler_statistics",
              "round_bf16", "round_fp16", "widen_bf16", "widen_fp16",
              "bf16_weights_matmul",  # test_precision.py
              "bspline_basis", "power_basis", "jacobi_basis", "wavelet_layer",
              "lag_correlation", "delay_aggregate", "conv2d"}
    for name, (fast, ref) in REGISTRY.items():
        assert fast is not ref
        assert name.removesuffix("_forward").removesuffix("_backward") in tested, name
