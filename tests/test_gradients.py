"""Every op's gradient against float64 central finite differences, on both kernel paths."""

import numpy as np
import pytest
from conftest import FD_EPS, FD_RTOL

import ndwork
from ndwork.autodiff import Tensor, backward, ops
from ndwork.autodiff.noise import TrainingNoise


def check_gradients(fn, *arrays, seed=0):
    """fn(*tensors) -> Tensor; compares d sum(R * fn) / d input with central differences."""
    rng = np.random.default_rng(seed)
    inputs = [Tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    out = fn(*inputs)
    weights = rng.normal(size=out.shape)
    backward(out, weights)
    for tensor in inputs:
        numeric = np.zeros_like(tensor.data)
        flat, grad = tensor.data.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + FD_EPS
            up = (fn(*inputs).data * weights).sum()
            flat[i] = keep - FD_EPS
            down = (fn(*inputs).data * weights).sum()
            flat[i] = keep
            grad[i] = (up - down) / (2 * FD_EPS)
        analytic = tensor.grad if tensor.grad is not None else np.zeros_like(numeric)
        scale = max(np.abs(numeric).max(), 1e-8)
        assert np.abs(analytic - numeric).max() <= FD_RTOL * scale + 1e-9, (
            f"gradient mismatch {np.abs(analytic - numeric).max():.3g} (scale {scale:.3g})")


@pytest.fixture(params=["numba", "numpy"])
def kernels(request):
    with ndwork.optimizations(kernels=request.param):
        yield request.param


def away_from_kinks(x, width=1e-3):
    """Move values off 0, where ReLU, |x| and max have no derivative."""
    return np.where(np.abs(x) < width, width * 3, x)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid"])
def test_linear(kernels, activation, rng):
    x = rng.normal(size=(5, 4))
    w = rng.normal(size=(4, 3))
    b = rng.normal(size=3)
    if activation == "relu":  # keep pre-activations off the kink
        b = b + np.sign(b) * 0.5
    check_gradients(lambda x, w, b: ops.linear(x, w, b, activation), x, w, b)
    check_gradients(lambda x, w: ops.linear(x, w, None, activation), x, w)


@pytest.mark.parametrize("kind", ["relu", "tanh", "sigmoid", "gelu", "elu", "softmax"])
def test_activation(kernels, kind, rng):
    x = away_from_kinks(rng.normal(size=(4, 6)))
    check_gradients(lambda x: ops.activation(x, kind), x)


def test_elementwise_with_broadcasting(kernels, rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(1, 4))
    check_gradients(ops.add, a, b)
    check_gradients(ops.sub, a, b)
    check_gradients(ops.mul, a, b)


def test_broadcast_along_a_middle_axis_and_a_constant_factor(rng):
    x = rng.normal(size=(2, 1, 3, 4))  # TFT's value shared by the heads
    check_gradients(lambda x: ops.broadcast(x, (2, 5, 3, 4)), x)
    values = ops.constant(rng.normal(size=(2, 3, 1)))  # an embedding's inputs: no gradient
    vectors = Tensor(rng.normal(size=(1, 4)), requires_grad=True)
    d_values, d_vectors = ops.mul(values, vectors).backward_fn(np.ones((2, 3, 4)))
    assert d_values is None  # not computed (and summed) only to be dropped
    np.testing.assert_allclose(d_vectors, values.data.sum(axis=(0, 1))[None].repeat(4, 1))


def test_shape_ops(kernels, rng):
    x = rng.normal(size=(3, 8))
    check_gradients(lambda x: ops.reshape(x, (6, 4)), x)
    check_gradients(lambda x: ops.transpose(ops.reshape(x, (3, 2, 4)), (0, 2, 1)), x)
    check_gradients(lambda x: ops.index(x, (slice(None), slice(2, 5))), x)
    check_gradients(lambda x: ops.flip(x), x)
    check_gradients(lambda x: ops.concat([x, ops.flip(x)], axis=1), x)


def test_gradients_add_up_in_place_without_writing_shared_ones(rng):
    """Slices send back only their piece, summed into one array per tensor; a gradient
    passed through to several tensors (an add's, x's and y's the same array) is never
    added into in place (each case fails if it were)."""
    x, y = rng.normal(size=(2, 4, 3))
    check_gradients(lambda x, y: ops.add(ops.add(x, y), ops.mul(x, x)), x, y)
    check_gradients(lambda x, y: ops.mul(ops.add(x, y), ops.add(x, ops.index(x, (slice(None),)))),
                    x, y)
    check_gradients(lambda x, y: ops.add(ops.index(ops.add(x, y), (slice(0, 3),)),
                                         ops.index(ops.mul(x, x), (slice(1, 4),))), x, y)
    upper, lower = (slice(0, 3),), (slice(1, 4),)  # overlapping pieces
    check_gradients(lambda x: ops.mul(ops.index(x, upper), ops.index(x, lower)), x)


def test_matmul(kernels, rng):
    check_gradients(ops.matmul, rng.normal(size=(3, 4)), rng.normal(size=(4, 5)))
    check_gradients(ops.matmul, rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 5)))
    check_gradients(ops.matmul, rng.normal(size=(2, 1, 3)), rng.normal(size=(2, 3, 4)))


@pytest.mark.parametrize("length,k", [(8, 2), (9, 2), (7, 3)])
def test_maxpool(kernels, length, k, rng):
    x = rng.permutation(np.arange(2 * length, dtype=float)).reshape(2, length)  # no ties
    check_gradients(lambda x: ops.maxpool(x, k), x)


@pytest.mark.parametrize("n_in,n_out", [(3, 12), (6, 12), (5, 7), (1, 4)])
def test_interpolate(kernels, n_in, n_out, rng):
    check_gradients(lambda x: ops.interpolate(x, n_out), rng.normal(size=(3, n_in)))


def test_layernorm(kernels, rng):
    check_gradients(ops.layernorm, rng.normal(size=(4, 6)), rng.normal(size=6),
                    rng.normal(size=6))


def test_dropout(kernels, rng):
    x = rng.normal(size=(5, 6))
    check_gradients(lambda x: ops.dropout(x, 0.3, TrainingNoise(1, 0, np.arange(5))), x)


@pytest.mark.parametrize("kind,param", [("mae", 0), ("mse", 0), ("huber", 0.5),
                                        ("quantile", 0.2), ("mape", 0), ("smape", 0)])
def test_point_losses(kernels, kind, param, rng):
    y = rng.normal(size=(4, 5)) + 2
    mask = (rng.random((4, 5)) > 0.3).astype(float)
    y_hat = y + away_from_kinks(rng.normal(size=(4, 5)), 1e-2)
    check_gradients(lambda y_hat: ops.point_loss(y_hat, y, mask, kind, param), y_hat)


def test_multi_quantile_loss(kernels, rng):
    y = rng.normal(size=(3, 4))
    y_hat = y[..., None] + away_from_kinks(rng.normal(size=(3, 4, 3)), 1e-2)
    q = np.array([0.1, 0.5, 0.9])
    check_gradients(lambda y_hat: ops.multi_quantile_loss(y_hat, y, np.ones_like(y), q), y_hat)


def test_elementwise_functions(kernels, rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(1, 4))
    positive = rng.uniform(0.5, 2.0, size=(3, 4))
    check_gradients(ops.minimum, a, b)
    check_gradients(ops.divide, a, positive)
    check_gradients(ops.divide, b, positive)
    check_gradients(ops.exp, a)
    check_gradients(ops.log, positive)
    check_gradients(ops.softplus, a * 10)
    check_gradients(lambda x: ops.total(x, 1), a)
    mask = rng.random((3, 4)) > 0.5
    check_gradients(lambda x, y: ops.select(mask, x, y), a, b)


def test_shared_input_accumulates(kernels, rng):
    """A tensor used twice gets the sum of both gradients."""
    check_gradients(lambda x: ops.mul(x, ops.activation(x, "tanh")), rng.normal(size=(3, 3)))


def test_selection_ops(kernels, rng):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    check_gradients(ops.maximum, a, b)
    check_gradients(lambda x: ops.cumsum(x, 1), a)
    check_gradients(lambda x: ops.mean(x, 0), a)
    index = np.array([[[2, 0], [1, 3]]])  # (1, 2, 2): two rows of each of two heads
    x = rng.normal(size=(1, 2, 4, 3))
    check_gradients(lambda x: ops.take_rows(x, index), x)
    check_gradients(lambda base, rows: ops.put_rows(base, index, rows), x,
                    rng.normal(size=(1, 2, 2, 3)))


def test_embedding_with_unseen_categories(rng):
    """Categorical embeddings: repeated codes accumulate, code 0 (unseen) reads the mean
    of the learnt rows and passes its gradient back to them."""
    index = np.array([[1, 3, 3], [0, 2, 0]])
    check_gradients(lambda table: ops.embedding(table, index), rng.normal(size=(4, 5)))
    table = rng.normal(size=(4, 5))
    np.testing.assert_allclose(ops.embedding(Tensor(table), index).data[1, 0],
                               table[1:].mean(axis=0))


@pytest.mark.parametrize("cell,gates", [("rnn_tanh", 1), ("rnn_relu", 1), ("lstm", 4),
                                        ("gru", 3)])
def test_recurrent(kernels, cell, gates, rng):
    """Backward through time of one layer, with and without biases."""
    t, b, i, h = 5, 3, 2, 4
    x = rng.normal(size=(t, b, i))  # time-major
    w_ih = rng.normal(size=(i, gates * h)) / 2
    w_hh = rng.normal(size=(h, gates * h)) / 2
    b_ih, b_hh = rng.normal(size=gates * h), rng.normal(size=gates * h)
    check_gradients(lambda *a: ops.recurrent(*a, cell), x, w_ih, w_hh, b_ih, b_hh)
    check_gradients(lambda x, w_ih, w_hh: ops.recurrent(x, w_ih, w_hh, None, None, cell),
                    x, w_ih, w_hh)


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("b", [3, 40])  # 40 windows x 16 hidden: the per-step BLAS path
def test_recurrent_from_a_given_state(kernels, cell, gates, b, rng):
    """TFT's encoders: a layer starting from (h0, c0) with gradients into them, and
    LSTM's cell states returned beside its hidden states (so a state can be handed on)."""
    t, i, h = 4, 2, 16 if b > 3 else 4
    x = rng.normal(size=(t, b, i))
    w_ih, w_hh = rng.normal(size=(i, gates * h)) / 2, rng.normal(size=(h, gates * h)) / 4
    b_ih, b_hh = rng.normal(size=gates * h), rng.normal(size=gates * h)
    state = [rng.normal(size=(b, h)) for _ in range(2 if cell == "lstm" else 1)]
    if b > 3:  # finite differences over every entry would take minutes: the inputs only
        w_ih, w_hh, b_ih, b_hh = (Tensor(a) for a in (w_ih, w_hh, b_ih, b_hh))
        check_gradients(lambda x, *s: ops.recurrent(x, w_ih, w_hh, b_ih, b_hh, cell,
                                                    initial=s, cell_states=cell == "lstm"),
                        x, *state)
        return
    check_gradients(lambda x, w_ih, w_hh, b_ih, b_hh, *s: ops.recurrent(
        x, w_ih, w_hh, b_ih, b_hh, cell, initial=s, cell_states=cell == "lstm"),
        x, w_ih, w_hh, b_ih, b_hh, *state)
    # from a zero state: the same as without one
    zeros = [Tensor(np.zeros_like(s)) for s in state]
    args = [Tensor(a) for a in (x, w_ih, w_hh, b_ih, b_hh)]
    np.testing.assert_allclose(ops.recurrent(*args, cell, initial=zeros).data,
                               ops.recurrent(*args, cell).data, rtol=1e-12)


def test_projected_lstm(kernels, rng):
    """PyTorch's proj_size: the projection W_hr (H, P) feeds the recurrence too."""
    t, b, i, h, proj = 5, 3, 2, 4, 2
    x = rng.normal(size=(t, b, i))
    w_ih, w_hh = rng.normal(size=(i, 4 * h)) / 2, rng.normal(size=(proj, 4 * h)) / 2
    b_ih, b_hh, w_hr = rng.normal(size=4 * h), rng.normal(size=4 * h), rng.normal(size=(h, proj))
    check_gradients(lambda x, w_ih, w_hh, b_ih, b_hh, w_hr: ops.recurrent(
        x, w_ih, w_hh, b_ih, b_hh, "lstm", w_hr), x, w_ih, w_hh, b_ih, b_hh, w_hr)


def test_slstm(kernels, rng):
    t, b, heads, dh = 5, 2, 2, 3
    xw = rng.normal(size=(t, b, 4 * heads * dh))
    r = rng.normal(size=(heads, dh, 4 * dh)) / 2
    check_gradients(ops.slstm, xw, r, rng.normal(size=4 * heads * dh))


@pytest.mark.parametrize("floor", [False, True])
def test_mlstm(kernels, floor, rng):
    """floor: the normalizer's exp(-m) side, whose gradient reaches m's argmax."""
    q, k, v = (rng.normal(size=(2, 5, 2, 3)) for _ in range(3))  # (B, S, NH, d)
    ig = rng.normal(size=(2, 5, 2)) - (6 if floor else 0)
    check_gradients(ops.mlstm, q, k, v, ig, rng.normal(size=(2, 5, 2)) + 1)


def test_headwise_linear_and_depthwise_causal_conv(rng):
    check_gradients(ops.headwise_linear, rng.normal(size=(2, 3, 6)), rng.normal(size=(3, 2, 2)))
    check_gradients(ops.depthwise_causal_conv, rng.normal(size=(2, 5, 3)),
                    rng.normal(size=(4, 3)), rng.normal(size=3))


@pytest.mark.parametrize("kernel_size,dilation", [(1, 1), (2, 1), (2, 4), (3, 2), (2, 16)])
def test_causal_conv1d(kernels, kernel_size, dilation, rng):
    x = rng.normal(size=(2, 9, 3))
    w = rng.normal(size=(kernel_size, 3, 4))
    b = rng.normal(size=4)
    check_gradients(lambda x, w, b: ops.causal_conv1d(x, w, b, dilation), x, w, b)


def test_layernorm_eps(kernels, rng):
    """TSMixer's BatchNorm: the variance's eps is an argument (1e-3 there)."""
    x, gamma, beta = rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=5)
    check_gradients(lambda x, g, b: ops.layernorm(x, g, b, 1e-3), x, gamma, beta)
    out = ops.layernorm(Tensor(x), Tensor(np.ones(5)), Tensor(np.zeros(5)), 1e-3).data
    centered = x - x.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out, centered / np.sqrt((centered ** 2).mean(1, keepdims=True)
                                                        + 1e-3), rtol=1e-12)


@pytest.mark.parametrize("n", [5, 6])
def test_fourier_transforms(n, rng):
    x = rng.normal(size=(3, n, 2))
    check_gradients(lambda x: ops.rfft(x, 1), x)
    check_gradients(lambda x: ops.fft(x, 1), x)
    np.testing.assert_allclose(ops.rfft(Tensor(x), 1).data[..., 1], np.fft.rfft(x, axis=1).imag)
    for m in (n // 2 + 1, n, 2):  # irfft reads n // 2 + 1 frequencies: pads or truncates
        z = rng.normal(size=(3, m, 2, 2))
        check_gradients(lambda z: ops.irfft(z, n, 1), z)
        np.testing.assert_allclose(ops.irfft(Tensor(z), n, 1).data,
                                   np.fft.irfft(z[..., 0] + 1j * z[..., 1], n, axis=1))
    check_gradients(ops.sqrt, rng.uniform(0.5, 2, size=(4, 3)))


def test_expand_bases(kernels, rng):
    """KAN's and RMoK's basis functions: derivatives against finite differences."""
    from ndwork.kernels import kernel
    from ndwork.nn.kan import silu

    x = rng.uniform(-1.2, 1.2, size=(4, 3))
    grid = np.arange(-3, 9) * 0.4 - 1
    check_gradients(lambda x: ops.expand(x, lambda v: kernel("bspline_basis")(v, grid, 3)), x)
    check_gradients(lambda x: ops.expand(x, lambda v: kernel("power_basis")(v, 4)), x)
    for a, b in ((1.0, 1.0), (0.5, 2.0)):
        check_gradients(lambda x, a=a, b=b: ops.expand(
            x, lambda v: kernel("jacobi_basis")(v, 5, a, b)), x)
    check_gradients(lambda x: ops.expand(x, silu), x)
    # B-splines of order k on a uniform grid sum to one inside it
    inside = rng.uniform(-1, 1, size=(5, 2))
    np.testing.assert_allclose(kernel("bspline_basis")(inside, grid, 3)[0].sum(-1), 1.0,
                               rtol=1e-12)


@pytest.mark.parametrize("wavelet", ["mexican_hat", "morlet", "dog", "meyer", "shannon"])
def test_wavelet_layer(kernels, wavelet, rng):
    x = rng.uniform(-1.5, 1.5, size=(4, 3))
    translation, scale = rng.normal(0, 0.3, size=(2, 3)), rng.uniform(0.6, 1.4, size=(2, 3))
    weights = rng.normal(size=(3, 2))
    window = np.hamming(3) if wavelet == "shannon" else np.ones(3)
    if wavelet == "meyer":  # |s| off its kinks at 0, 1/2 and 1
        s = np.abs((x[:, None, :] - translation) / scale)
        assert np.min(np.abs(s[..., None] - [0, 0.5, 1])) > 1e-3, "move the draw off the kinks"
    check_gradients(lambda x, t, s, w: ops.wavelet_layer(x, t, s, w, wavelet, window), x,
                    translation, scale, weights)


@pytest.mark.parametrize("shape,window", [((3, 6, 2), 3), ((2, 5), 7), ((2, 1, 2), 3)])
def test_moving_average(kernels, shape, window, rng):
    """Windows wider than the series included: the repeated ends carry most weight."""
    check_gradients(lambda x: ops.moving_average(x, window), rng.normal(size=shape))


def test_autocorrelation_ops(kernels, rng):
    """Autoformer's lag correlation and time-delay aggregation (the delays are data)."""
    q, k = rng.normal(size=(2, 2, 6, 3))
    check_gradients(ops.lag_correlation, q, k)
    delays = np.array([[0, 4, 1], [5, 2, 3]])
    check_gradients(lambda v, w: ops.delay_aggregate(v, w, delays), rng.normal(size=(2, 6, 3)),
                    rng.normal(size=(2, 3)))


def test_complex_ops(rng):
    """FEDformer's complex arithmetic on (real, imaginary) pairs: values against numpy's
    complex einsum and tanh, gradients against finite differences of the pairs."""
    a, b = rng.normal(size=(3, 4, 2)), rng.normal(size=(4, 5, 2))
    got = ops.complex_einsum("xe,ey->xy", Tensor(a), Tensor(b)).data
    expected = np.einsum("xe,ey->xy", a[..., 0] + 1j * a[..., 1], b[..., 0] + 1j * b[..., 1])
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], expected, rtol=1e-12)
    check_gradients(lambda a, b: ops.complex_einsum("xe,ey->xy", a, b), a, b)
    check_gradients(lambda a, b: ops.complex_einsum("bhe,ehx->bxh", a, b),
                    rng.normal(size=(2, 3, 4, 2)), rng.normal(size=(4, 3, 2, 2)))
    z = rng.normal(size=(3, 4, 2))
    np.testing.assert_allclose(ops.complex_tanh(Tensor(z)).data[..., 1],
                               np.tanh(z[..., 0] + 1j * z[..., 1]).imag, rtol=1e-12)
    check_gradients(ops.complex_tanh, z)
    # float32 near its poles (i pi/2) and far out: numpy's complex tanh, 1e-5 relative
    near = np.array([[1e-4, np.pi / 2 + 1e-4], [-3e-3, -np.pi / 2], [30, 1], [-50, 2], [0.1, 1.5]],
                    np.float32)
    got = ops.complex_tanh(Tensor(near)).data
    expected = np.tanh(near[:, 0].astype(np.float64) + 1j * near[:, 1])
    np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="summed in one operand only"):
        ops.complex_einsum("xe,y->xy", Tensor(a), Tensor(b[0]))


def test_glu(kernels, rng):
    x = rng.normal(size=(3, 4, 6))
    check_gradients(ops.glu, x)
    np.testing.assert_allclose(ops.glu(Tensor(x)).data,
                               x[..., :3] / (1 + np.exp(-x[..., 3:])), rtol=1e-12)


def test_centered_sum(rng):
    a, b = rng.normal(size=(1, 1, 2)), rng.normal(size=(3, 3, 2))
    check_gradients(lambda a, b: ops.centered_sum([a, b], (5, 5, 2)), a, b)
    out = ops.centered_sum([Tensor(a), Tensor(b)], (5, 5, 2)).data
    np.testing.assert_allclose(out[2, 2], a[0, 0] + b[1, 1])
    assert not out[0].any() and not out[:, 4].any()


def test_take_and_place(kernels, rng):
    index = np.array([4, 0, 2])
    x = rng.normal(size=(2, 5, 3))
    check_gradients(lambda x: ops.take(x, index, 1), x)
    check_gradients(lambda y: ops.place(y, index, 6, 1), rng.normal(size=(2, 3, 3)))
    placed = ops.place(ops.take(Tensor(x), index, 1), index, 5, 1).data
    np.testing.assert_array_equal(placed[:, index], x[:, index])
    assert not placed[:, [1, 3]].any()


@pytest.mark.parametrize("kh,kw", [(1, 1), (3, 5), (5, 3)])
def test_conv2d(kernels, kh, kw, rng):
    check_gradients(lambda x, w, b: ops.conv2d(x, w, b), rng.normal(size=(2, 3, 4, 2)),
                    rng.normal(size=(kh, kw, 2, 3)), rng.normal(size=3))


def test_complex_abs(rng):
    z = rng.normal(size=(3, 4, 2))
    check_gradients(ops.complex_abs, z)
    np.testing.assert_allclose(ops.complex_abs(Tensor(z)).data, np.abs(z[..., 0] + 1j * z[..., 1]))
