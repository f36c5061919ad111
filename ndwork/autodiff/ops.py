"""Differentiable ops. Each op computes its forward and, right beside it, the closure
that maps the output gradient to the input gradients. Kernels come from
`ndwork.kernels.kernel(name)`, i.e. from the active `Optimizations`.

Shapes: B = windows in the batch, L = input_size, h = horizon, C = channels.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from ndwork import profiling
from ndwork.autodiff.noise import TrainingNoise
from ndwork.autodiff.tensor import Slice, Tensor
from ndwork.config import active
from ndwork.kernels import fourier, gemm, kernel
from ndwork.kernels.attention import IMPLEMENTATIONS as ATTENTION
from ndwork.kernels.kan import WAVELETS
from ndwork.kernels.precision import to_low

BACKWARD_FLOPS = {"linear": 2.0, "matmul": 2.0, "attention": 2.5, "causal_conv1d": 2.0,
                  "conv2d": 2.0, "recurrent": 2.0, "slstm": 2.0, "mlstm": 2.5,
                  "headwise_linear": 2.0}  # x the forward's


def _profiled(op):
    """Time the op's forward and backward into the active ndwork.profile(), if any, and
    charge the time spent here, outside the op, to the profiler's own overhead."""
    name = op.__name__

    @functools.wraps(op)
    def run(*args, **kwargs):
        prof = profiling.current()
        if prof is None:  # the common case first: no profile open
            return op(*args, **kwargs)
        entered = time.perf_counter()
        out, seconds = prof.time(name, lambda: op(*args, **kwargs))
        inputs = tuple(a for a in args if isinstance(a, Tensor))
        listed = tuple(t for a in args if isinstance(a, list) for t in a)
        if not any(out is t for t in inputs + listed):  # not a pass-through (identity, ...)
            forward_flops = profiling.flops(name, inputs, out.data)
            prof.count(name, forward_flops, out.data.nbytes)
            if out.backward_fn is not None:
                out.backward_fn = _timed_backward(prof, name, out.backward_fn,
                                                  BACKWARD_FLOPS.get(name, 1.0) * forward_flops)
        prof.add_overhead(time.perf_counter() - entered - seconds)
        return out

    return run


def _timed_backward(prof, name: str, inner, flops: float):
    def backward_fn(g):
        entered = time.perf_counter()
        grads, seconds = prof.time(f"{name} backward", inner, g)
        prof.count(f"{name} backward", flops, sum(x.nbytes for x in grads if x is not None))
        prof.add_overhead(time.perf_counter() - entered - seconds)
        return grads

    return backward_fn


def constant(array: np.ndarray) -> Tensor:
    return Tensor(array)


def as_tensor(x: Tensor | np.ndarray) -> Tensor:
    """x as a graph node: a batch's exogenous inputs are arrays, or tensors when they
    hold learnt categorical embeddings."""
    return x if isinstance(x, Tensor) else Tensor(x)


def values(x: Tensor | np.ndarray) -> np.ndarray:
    """x's values (for inference-only code that works on arrays)."""
    return x.data if isinstance(x, Tensor) else x


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to the operand's shape."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _repeated(a: np.ndarray, shape: tuple[int, ...], dtype=None) -> np.ndarray:
    """a broadcast to shape, as a new array. np.copyto: numpy's array() or astype() of a
    broadcast view takes a path 2.6x slower ((1024, 1, 36, 32) to 4 heads: 18 -> 7 ms)."""
    out = np.empty(shape, a.dtype if dtype is None else dtype)
    np.copyto(out, a, casting="unsafe")
    return out


@_profiled
def linear(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str = "identity",
           hidden: bool | None = None) -> Tensor:
    """act(x @ W + b) over the last axis; x (..., in), W (in, out), b (out,).

    Under mixed precision the GEMMs take x, W and the output gradient rounded to the
    low precision (accumulating in float32; the backward rounds x and W again rather
    than the graph holding rounded copies), and a hidden layer keeps its output in it.
    `hidden`: whether the output is kept like a hidden activation (attention's q, k, v
    are) rather than read in float32 by a head or a sum; by default, whether the layer
    has an activation."""
    lead = x.shape[:-1]
    policy = active().dtypes
    low = None if weight.stored.itemsize == 2 else _gemm_precision(policy, x.stored, weight.stored)
    x2 = _gemm_operand(x, low)
    y = kernel("linear_forward")(x2, _gemm_weight(weight, low),
                                 None if bias is None else bias.data, activation)
    keeps_graph = x.requires_grad or weight.requires_grad  # else nothing to save memory for
    # x read across its axes (a mixing over time) had to be copied into rows: the
    # backward reads that copy rather than making it again
    copied = x2 if keeps_graph and low is None and not np.may_share_memory(x2, x.stored) else None
    if policy.store_low and keeps_graph and (
            activation != "identity" if hidden is None else hidden):
        y = to_low(y, policy.low)

    def backward_fn(dy):
        x2 = _gemm_operand(x, low) if copied is None else copied
        dx, dw, db = kernel("linear_backward")(x2, _gemm_weight(weight, low), y,
                                               dy.reshape(y.shape), activation, x.requires_grad)
        return (None if dx is None else dx.reshape(x.shape), dw, db)

    parents = (x, weight) if bias is None else (x, weight, bias)
    fn = backward_fn if bias is not None else (lambda dy: backward_fn(dy)[:2])
    return Tensor(y.reshape(*lead, -1), parents, fn)


def _gemm_operand(x: Tensor, low):
    """x as (rows, in) for the GEMMs: as stored (low-precision storage is widened inside
    the GEMM), or rounded to `low`, again for the backward rather than kept from the
    forward (the graph then holds no second copy of x; only a copy that reshaping made
    is kept, see linear)."""
    x2 = x.stored.reshape(-1, x.shape[-1])
    return x2 if low is None else to_low(x2, low)


def _gemm_weight(weight: Tensor, low):
    """W as the GEMMs take it: a forecast's bfloat16 weights as they are; else, like x,
    rounded again for the backward."""
    if weight.stored.itemsize == 2:
        return weight.stored
    return weight.data if low is None else to_low(weight.data, low)


def _gemm_precision(policy, x: np.ndarray, weight: np.ndarray):
    """The low dtype a dense layer's GEMMs take under the policy, or None: float32, on
    the exact values of low-precision activations, where low-precision GEMMs are not
    native here (rounding W and the gradient too would only cost copies)."""
    if policy.low is None:
        return None
    if policy.per_shape:
        rows = x.size // x.shape[-1]
        return policy.low if gemm.low_precision_pays(rows, *weight.shape, policy.low) else None
    return policy.low if gemm.native_low_precision(policy.low, active().threads) else None


@_profiled
def activation(x: Tensor, kind: str) -> Tensor:
    """Elementwise relu, tanh, sigmoid, gelu; or softmax over the last axis."""
    if kind == "identity":
        return x
    if kind == "gelu" and x.requires_grad:  # keeps its slope: the backward is a product
        y, saved = kernel("gelu_train_forward")(x.data)
    else:
        y = saved = kernel(f"{kind}_forward")(x.data)

    def backward_fn(dy):
        return (kernel(f"{kind}_backward")(saved, dy),)

    return Tensor(y, (x,), backward_fn)


@_profiled
def glu(x: Tensor) -> Tensor:
    """Gated linear unit (torch's F.glu) over the last axis: its first half times the
    sigmoid of its second, in one op (TFT gates every sub-layer with it)."""
    return Tensor(kernel("glu_forward")(x.data), (x,),
                  lambda g: (kernel("glu_backward")(x.data, g),))


@_profiled
def add(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.data + b.data, (a, b),
                  lambda g: (_unbroadcast(g, a.shape), _unbroadcast(g, b.shape)))


@_profiled
def sub(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.data - b.data, (a, b),
                  lambda g: (_unbroadcast(g, a.shape), -_unbroadcast(g, b.shape)))


@_profiled
def mul(a: Tensor, b: Tensor) -> Tensor:
    def backward_fn(g):  # a constant factor (an embedding's values) gets no gradient
        return (_unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
                _unbroadcast(g * a.data, b.shape) if b.requires_grad else None)

    return Tensor(a.data * b.data, (a, b), backward_fn)


@_profiled
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """np.matmul with broadcasting over leading axes (a constant operand gets no gradient);
    2-D products by the BLAS the configuration picks (gemm.matmul)."""
    y = gemm.matmul(a.data, b.data)

    def backward_fn(g):
        da = _unbroadcast(gemm.matmul(g, np.swapaxes(b.data, -1, -2)), a.shape) \
            if a.requires_grad else None
        db = _unbroadcast(gemm.matmul(np.swapaxes(a.data, -1, -2), g), b.shape) \
            if b.requires_grad else None
        return da, db

    return Tensor(y, (a, b), backward_fn)


@_profiled
def moving_average(x: Tensor, window: int) -> Tensor:
    """The centered moving average of x (B, T, ...) over an odd window along time (axis
    1), the ends repeated (window - 1) / 2 times: the decomposition models' trend."""
    return Tensor(kernel("moving_average_forward")(x.data, window), (x,),
                  lambda g: (kernel("moving_average_backward")(g, window),))


@_profiled
def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max; the gradient goes to the larger operand (to a on ties)."""
    pick_a = a.data >= b.data
    return Tensor(np.where(pick_a, a.data, b.data), (a, b),
                  lambda g: (_unbroadcast(g * pick_a, a.shape), _unbroadcast(g * ~pick_a, b.shape)))


@_profiled
def minimum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise min; the gradient goes to the smaller operand (to a on ties)."""
    pick_a = a.data <= b.data
    return Tensor(np.where(pick_a, a.data, b.data), (a, b),
                  lambda g: (_unbroadcast(g * pick_a, a.shape), _unbroadcast(g * ~pick_a, b.shape)))


@_profiled
def divide(a: Tensor, b: Tensor) -> Tensor:
    y = a.data / b.data
    return Tensor(y, (a, b), lambda g: (_unbroadcast(g / b.data, a.shape),
                                        _unbroadcast(-g * y / b.data, b.shape)))


@_profiled
def exp(x: Tensor) -> Tensor:
    y = np.exp(x.data)
    return Tensor(y, (x,), lambda g: (g * y,))


@_profiled
def log(x: Tensor) -> Tensor:
    return Tensor(np.log(x.data), (x,), lambda g: (g / x.data,))


@_profiled
def sqrt(x: Tensor) -> Tensor:
    y = np.sqrt(x.data)
    return Tensor(y, (x,), lambda g: (g / (2 * y),))


@_profiled
def rfft(x: Tensor, axis: int) -> Tensor:
    """The real FFT (numpy.fft.rfft's) of x along `axis`: n // 2 + 1 frequencies, as a last
    axis of size 2 (real, imaginary), torch's view_as_real layout."""
    n = x.shape[axis]
    y = fourier.rfft(x.data, axis=axis)

    def backward_fn(g):  # the adjoint: a half spectrum's inverse transform, unnormalized
        z = g[..., 0] + 1j * g[..., 1]
        half = np.ones(y.shape[axis], g.dtype)  # in g's precision: the FFT stays in it
        half[1:(n + 1) // 2] = 0.5  # frequencies counted twice by irfft's Hermitian sum
        z = z * half.reshape([-1 if a == axis % x.data.ndim else 1 for a in range(z.ndim)])
        return ((n * fourier.irfft(z, n, axis=axis)).astype(x.data.dtype),)

    return Tensor(_real_pair(y, x.data.dtype), (x,), backward_fn)


@_profiled
def fft(x: Tensor, axis: int) -> Tensor:
    """The FFT (numpy.fft.fft's) of real x along `axis` (all n frequencies), as a last axis of size 2
    (real, imaginary)."""
    y = fourier.fft(x.data, axis=axis)
    return Tensor(_real_pair(y, x.data.dtype), (x,),
                  lambda g: (fourier.fft(g[..., 0] - 1j * g[..., 1], axis=axis).real.astype(
                      x.data.dtype),))


@_profiled
def irfft(z: Tensor, n: int, axis: int) -> Tensor:
    """The inverse real FFT (numpy.fft.irfft's, length n along `axis`) of z (..., 2): reads
    the first n // 2 + 1 frequencies, the imaginary parts of the zero and Nyquist ones
    ignored, as numpy and torch do."""
    spectrum = z.data[..., 0] + 1j * z.data[..., 1]
    y = fourier.irfft(spectrum, n, axis=axis).astype(z.data.dtype)
    m = spectrum.shape[axis]

    def backward_fn(g):
        grad = fourier.rfft(g, axis=axis)  # n // 2 + 1 frequencies
        weight = np.full(grad.shape[axis], 2.0 / n, g.dtype)
        weight[0] = 1.0 / n
        if n % 2 == 0:
            weight[-1] = 1.0 / n
        shape = [-1 if a == axis % g.ndim else 1 for a in range(g.ndim)]
        grad = grad * weight.reshape(shape)
        if m > grad.shape[axis]:  # frequencies irfft did not read
            pad = [(0, 0)] * g.ndim
            pad[axis % g.ndim] = (0, m - grad.shape[axis])
            grad = np.pad(grad, pad)
        else:
            grad = np.take(grad, np.arange(m), axis=axis)
        return (_real_pair(grad, z.data.dtype),)

    return Tensor(y, (z,), backward_fn)


def _complex(pair: np.ndarray) -> np.ndarray:
    """(..., 2) (real, imaginary) pairs as complex numbers: a view when contiguous."""
    pair = np.ascontiguousarray(pair)
    if pair.dtype not in (np.float32, np.float64):
        pair = pair.astype(np.float32)
    return pair.view(np.complex64 if pair.dtype == np.float32 else np.complex128)[..., 0]


def _contract(subscripts: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.einsum of two operands, every summed index in both, as one batched matmul
    (torch.einsum's bmm): the indices both operands and the output share are the batch.
    numpy's einsum loops over such batches element by element (8x slower at FEDformer's
    mode mixing)."""
    operands, out = subscripts.split("->")
    left, right = operands.split(",")
    batch = [c for c in out if c in left and c in right]
    summed = [c for c in left if c in right and c not in out]
    only_a, only_b = [c for c in left if c not in right], [c for c in right if c not in left]
    size = dict(zip(left, a.shape, strict=True)) | dict(zip(right, b.shape, strict=True))

    def count(indices):
        return int(np.prod([size[c] for c in indices]))

    lhs = a.transpose([left.index(c) for c in batch + only_a + summed]).reshape(
        count(batch), count(only_a), count(summed))
    rhs = b.transpose([right.index(c) for c in batch + summed + only_b]).reshape(
        count(batch), count(summed), count(only_b))
    order = batch + only_a + only_b
    return (lhs @ rhs).reshape([size[c] for c in order]).transpose([order.index(c) for c in out])


@_profiled
def complex_einsum(subscripts: str, a: Tensor, b: Tensor) -> Tensor:
    """einsum of two complex tensors stored as (..., 2) (real, imaginary), e.g.
    FEDformer's mixing of Fourier modes. Every summed index appears in both operands.
    The gradient of a real loss reaches a as g @ conj(b) (and b as conj(a) @ g): the
    pair (d/d real, d/d imaginary) read as one complex number."""
    operands, out = subscripts.split("->")
    left, right = operands.split(",")
    if not set(left) <= set(right) | set(out) or not set(right) <= set(left) | set(out):
        raise ValueError(f"complex_einsum {subscripts!r}: an index summed in one operand only")
    ca, cb = _complex(a.data), _complex(b.data)

    def backward_fn(g):
        gc = _complex(g)
        return (_real_pair(_contract(f"{out},{right}->{left}", gc, cb.conj()), a.data.dtype),
                _real_pair(_contract(f"{left},{out}->{right}", ca.conj(), gc), b.data.dtype))

    return Tensor(_real_pair(_contract(subscripts, ca, cb), a.data.dtype), (a, b), backward_fn)


@_profiled
def complex_tanh(z: Tensor) -> Tensor:
    """tanh of a complex tensor (..., 2), holomorphic: the gradient is conj(1 - tanh^2) g.
    In real arithmetic, 20x numpy's complex tanh: (sinh a cosh a + i sin b cos b) /
    (sinh^2 a + cos^2 b), a denominator without the cancellation of cosh 2a + cos 2b near
    the poles; a clipped to +-20, where the result is +-1 + 0i to float precision."""
    re = np.clip(z.data[..., 0], -20, 20)
    im = z.data[..., 1]
    sinh, cos = np.sinh(re), np.cos(im)
    denominator = sinh * sinh + cos * cos
    pair = np.stack([sinh * np.cosh(re) / denominator, np.sin(im) * cos / denominator], -1)
    y = _complex(pair)
    return Tensor(pair.astype(z.data.dtype, copy=False), (z,),
                  lambda g: (_real_pair((1 - y * y).conj() * _complex(g), z.data.dtype),))


@_profiled
def lag_correlation(q: Tensor, k: Tensor) -> Tensor:
    """Autoformer's auto-correlation scores: q, k (B, L, C) -> (B, L), their circular
    cross-correlation at each lag along time, averaged over channels (see
    ndwork.kernels.autocorrelation)."""
    y = kernel("lag_correlation_forward")(q.data, k.data)
    return Tensor(y, (q, k), lambda g: kernel("lag_correlation_backward")(q.data, k.data, g))


@_profiled
def delay_aggregate(v: Tensor, weights: Tensor, delays: np.ndarray) -> Tensor:
    """Autoformer's time-delay aggregation: v (B, L, C) rolled by each of the lags
    delays (B, K) and summed with weights (B, K) -> (B, L, C)."""
    y = kernel("delay_aggregate_forward")(v.data, weights.data, delays)
    return Tensor(y, (v, weights),
                  lambda g: kernel("delay_aggregate_backward")(v.data, weights.data, delays, g))


def _real_pair(complex_values: np.ndarray, dtype) -> np.ndarray:
    """Complex numbers as (..., 2) (real, imaginary) pairs of `dtype`: a view when the
    precision already matches."""
    values = np.ascontiguousarray(complex_values)
    pairs = values.view(values.real.dtype).reshape(*values.shape, 2)
    return pairs if pairs.dtype == dtype else pairs.astype(dtype)


@_profiled
def softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), computed without overflow."""
    return Tensor(np.logaddexp(0, x.data).astype(x.data.dtype), (x,),
                  lambda g: (g / (1 + np.exp(-x.data)),))


@_profiled
def expand(x: Tensor, function) -> Tensor:
    """An elementwise function, or a basis of them: `function(values)` returns f(x) of
    shape x.shape + extra (extra = () for one function, (K,) for K basis functions of
    each element) and its derivative in x of the same shape; the backward sums the
    output gradient times it over the extra axes (KAN's splines, RMoK's experts)."""
    y, slope = function(x.data)
    extra = tuple(range(x.data.ndim, y.ndim))
    return Tensor(y, (x,), lambda g: ((g * slope).sum(axis=extra) if extra else g * slope,))


@_profiled
def wavelet_layer(x: Tensor, translation: Tensor, scale: Tensor, weights: Tensor, wavelet: str,
                  window: np.ndarray) -> Tensor:
    """RMoK's wavelet KAN, fused: x (R, I), translation and scale (O, I), weights (I, O)
    -> y (R, O), y[r, o] = sum_i weights[i, o] window[i] psi((x[r, i] - translation[o, i])
    / scale[o, i]) (ndwork.kernels.kan's wavelets)."""
    code = WAVELETS.index(wavelet)
    args = (translation.data, scale.data, weights.data, window, code)
    y = kernel("wavelet_layer_forward")(x.data, *args)
    return Tensor(y, (x, translation, scale, weights),
                  lambda g: kernel("wavelet_layer_backward")(x.data, *args, g))


@_profiled
def select(mask: np.ndarray, a: Tensor, b: Tensor) -> Tensor:
    """np.where(mask, a, b) for a constant mask; each gradient flows where it was picked
    (a NaN or inf in the branch not taken does not reach the gradient)."""
    mask = np.asarray(mask, bool)
    shape = np.broadcast_shapes(mask.shape, a.shape, b.shape)
    mask = np.broadcast_to(mask, shape)
    return Tensor(np.where(mask, a.data, b.data), (a, b),
                  lambda g: (_unbroadcast(np.where(mask, g, 0), a.shape),
                             _unbroadcast(np.where(mask, 0, g), b.shape)))


@_profiled
def total(x: Tensor, axis: int) -> Tensor:
    """Sum over one axis (dropped)."""
    return Tensor(x.data.sum(axis=axis), (x,),
                  lambda g: (_repeated(np.expand_dims(g, axis), x.shape, x.data.dtype),))


@_profiled
def cumsum(x: Tensor, axis: int) -> Tensor:
    return Tensor(np.cumsum(x.data, axis=axis), (x,),
                  lambda g: (np.flip(np.cumsum(np.flip(g, axis), axis=axis), axis),))


@_profiled
def mean(x: Tensor, axis: int) -> Tensor:
    """Mean over one axis, kept as size 1."""
    n = x.shape[axis]
    return Tensor(x.data.mean(axis=axis, keepdims=True), (x,),
                  lambda g: (_repeated(g / n, x.shape, x.data.dtype),))


@_profiled
def take_rows(x: Tensor, index: np.ndarray) -> Tensor:
    """x (..., N, D), index (..., u) distinct per row -> x[..., index, :] (..., u, D)."""
    idx = index[..., None]

    def backward_fn(g):
        dx = np.zeros_like(x.data)
        np.put_along_axis(dx, idx, g, axis=-2)
        return (dx,)

    return Tensor(np.take_along_axis(x.data, idx, axis=-2), (x,), backward_fn)


@_profiled
def embedding(table: Tensor, index: np.ndarray) -> Tensor:
    """Rows of table (K + 1, D) at the integer codes `index` (...) -> (..., D); code 0,
    an unseen category, gets the mean of rows 1..K (NeuralForecast's lookup)."""
    idx = np.asarray(index).astype(np.int64)
    out = table.data[idx]
    unseen = idx == 0
    if unseen.any():
        out[unseen] = table.data[1:].mean(axis=0)

    def backward_fn(g):
        flat, rows = idx.reshape(-1), g.reshape(-1, table.shape[1])
        d = np.stack([np.bincount(flat, weights=rows[:, k], minlength=table.shape[0])
                      for k in range(table.shape[1])], axis=1).astype(table.data.dtype)
        d[1:] += d[0] / (len(d) - 1)  # what the unseen codes received, through the mean
        d[0] = 0
        return (d,)

    return Tensor(out, (table,), backward_fn)


@_profiled
def take(x: Tensor, indices: np.ndarray, axis: int) -> Tensor:
    """x's entries at the distinct `indices` along `axis` (numpy.take)."""
    return Tensor(np.take(x.data, indices, axis=axis), (x,),
                  lambda g: (_placed(g, indices, x.shape[axis], axis),))


@_profiled
def place(x: Tensor, indices: np.ndarray, size: int, axis: int) -> Tensor:
    """take's adjoint: zeros of `size` along `axis`, x's entries at the distinct
    `indices` there (FEDformer's modes back into a spectrum)."""
    return Tensor(_placed(x.data, indices, size, axis), (x,),
                  lambda g: (np.take(g, indices, axis=axis),))


def _placed(x: np.ndarray, indices: np.ndarray, size: int, axis: int) -> np.ndarray:
    shape = list(x.shape)
    shape[axis] = size
    out = np.zeros(shape, x.dtype)
    key = [slice(None)] * x.ndim
    key[axis] = indices
    out[tuple(key)] = x
    return out


@_profiled
def centered_sum(tensors: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    """The tensors, each centered in zeros of `shape` (same rank, odd margins), summed:
    TimesNet's inception kernels of sizes 1, 3, ... as one kernel, in one allocation."""
    def centre(t):
        return tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(shape, t.shape, strict=True))

    out = np.zeros(shape, tensors[0].data.dtype)
    for t in tensors:
        out[centre(t)] += t.data
    return Tensor(out, tuple(tensors), lambda g: tuple(g[centre(t)] for t in tensors))


@_profiled
def put_rows(base: Tensor, index: np.ndarray, rows: Tensor) -> Tensor:
    """base (..., N, D) with its rows at index (..., u) replaced by rows (..., u, D)."""
    idx = index[..., None]
    out = base.data.copy()
    np.put_along_axis(out, idx, rows.data, axis=-2)

    def backward_fn(g):
        d_base = g.copy()
        np.put_along_axis(d_base, idx, 0, axis=-2)
        return d_base, np.take_along_axis(g, idx, axis=-2)

    return Tensor(out, (base, rows), backward_fn)


@_profiled
def broadcast(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """x repeated to `shape` by numpy's broadcasting (a copy); the gradient sums back."""
    return Tensor(_repeated(x.data, shape), (x,), lambda g: (_unbroadcast(g, x.shape),))


@_profiled
def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A view, in x's stored precision."""
    return Tensor(x.stored.reshape(shape), (x,), lambda g: (g.reshape(x.shape),))


@_profiled
def transpose(x: Tensor, axes: tuple[int, ...]) -> Tensor:
    inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
    return Tensor(x.stored.transpose(axes), (x,), lambda g: (g.transpose(inverse),))


@_profiled
def index(x: Tensor, key, contiguous: bool = False) -> Tensor:
    """Basic slicing x[key] (no fancy indexing): a view, or with `contiguous` a C-ordered
    copy (for a value kept and read by kernels that would copy the view at every call)."""
    y = x.data[key]
    return Tensor(np.ascontiguousarray(y) if contiguous else y, (x,), lambda g: (Slice(key, g),))


@_profiled
def flip(x: Tensor, axis: int = -1) -> Tensor:
    return Tensor(np.flip(x.data, axis), (x,), lambda g: (np.flip(g, axis),))


@_profiled
def concat(tensors: list[Tensor], axis: int = -1) -> Tensor:
    if len(tensors) == 1:
        return tensors[0]
    sizes = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor(np.concatenate([t.data for t in tensors], axis=axis), tensors,
                  lambda g: tuple(np.split(g, sizes, axis=axis)))


@_profiled
def maxpool(x: Tensor, kernel_size: int) -> Tensor:
    """Max pooling with stride = kernel, ceil mode, over the last axis of x (B, L)."""
    if kernel_size == 1:
        return x
    y, argmax = kernel("maxpool_forward")(x.data, kernel_size)
    return Tensor(y, (x,), lambda g: (kernel("maxpool_backward")(g, argmax, x.shape[1]),))


@_profiled
def interpolate(x: Tensor, size: int) -> Tensor:
    """Linear interpolation (align_corners=False) of x (R, n) to (R, size)."""
    if x.shape[-1] == size:
        return x
    y = kernel("interpolate_forward")(x.data, size)
    return Tensor(y, (x,), lambda g: (kernel("interpolate_backward")(g, x.shape[1]),))


@_profiled
def layernorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    lead = x.shape[:-1]
    x2 = x.data.reshape(-1, x.shape[-1])
    y, mean, rstd = kernel("layernorm_forward")(x2, gamma.data, beta.data, eps)

    def backward_fn(g):
        dx, dgamma, dbeta = kernel("layernorm_backward")(
            x2, gamma.data, mean, rstd, g.reshape(x2.shape)
        )
        return dx.reshape(x.shape), dgamma, dbeta

    return Tensor(y.reshape(*lead, -1), (x, gamma, beta), backward_fn)


@_profiled
def dropout(x: Tensor, p: float, rng: TrainingNoise | None) -> Tensor:
    """Inverted dropout; identity when p == 0 or rng is None (inference). x's leading
    axis runs over the batch's windows (see TrainingNoise)."""
    if p <= 0 or rng is None:
        return x
    keep = rng.dropout_keep(x.shape, p, x.data.dtype)
    return Tensor(x.data * keep, (x,), lambda g: (g * keep,))


@_profiled
def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
              key_padding_mask: np.ndarray | None = None) -> Tensor:
    """softmax(q kᵀ / sqrt(d)) v over (B, H, N, d); flash or naive per Optimizations.attention.

    Saves only the output and the per-row log-sum-exp for the backward. Under mixed
    precision q, k and v come stored in the low precision (the projections keep them so):
    the graph holds them at half the bytes, and the kernels compute on their exact values
    with float32 accumulators and log-sum-exp."""
    forward, backward = ATTENTION[active().attention]
    out, lse = forward(q.data, k.data, v.data, causal, key_padding_mask)

    def backward_fn(g):
        return backward(q.data, k.data, v.data, out, lse, g, causal, key_padding_mask)

    return Tensor(out, (q, k, v), backward_fn)


@_profiled
def causal_conv1d(x: Tensor, w: Tensor, b: Tensor | None, dilation: int) -> Tensor:
    """TCN's causal dilated convolution over time: x (B, T, C_in), w (K, C_in, C_out),
    b (C_out,) -> (B, T, C_out); see ndwork.kernels.convolution. Keeps x for the backward."""
    y = kernel("causal_conv1d_forward")(x.data, w.data, dilation)
    if b is not None:
        y += b.data

    def backward_fn(g):
        dx, dw = kernel("causal_conv1d_backward")(x.data, w.data, dilation, g)
        grads = (dx if x.requires_grad else None, dw)
        return grads if b is None else (*grads, g.reshape(-1, g.shape[-1]).sum(axis=0))

    return Tensor(y, (x, w) if b is None else (x, w, b), backward_fn)


@_profiled
def conv2d(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """2-D convolution with zero "same" padding: x (B, H, W, C_in) channels last,
    w (Kh, Kw, C_in, C_out) odd sizes, b (C_out,) -> (B, H, W, C_out); see
    ndwork.kernels.convolution. Keeps x for the backward."""
    y = kernel("conv2d_forward")(x.data, w.data)
    if b is not None:
        y += b.data

    def backward_fn(g):
        dx, dw = kernel("conv2d_backward")(x.data, w.data, g)
        grads = (dx if x.requires_grad else None, dw)
        return grads if b is None else (*grads, g.reshape(-1, g.shape[-1]).sum(axis=0))

    return Tensor(y, (x, w) if b is None else (x, w, b), backward_fn)


@_profiled
def complex_abs(z: Tensor) -> Tensor:
    """|z| of a complex tensor (..., 2) -> (...); the gradient z / |z| (0 at 0)."""
    y = np.hypot(z.data[..., 0], z.data[..., 1])
    safe = np.where(y > 0, y, 1)
    return Tensor(y, (z,), lambda g: ((z.data * (g / safe)[..., None]).astype(z.data.dtype),))


def _recurrent_forward(x: np.ndarray, w_ih, w_hh, b_ih, b_hh, cell: str, w_hr,
                       initial: tuple = ()) -> tuple:
    """The forward of one recurrent layer on arrays: what its kernel keeps (the hidden
    states first); `initial` the state it starts from ((h0,), LSTM's (h0, c0)) or ()."""
    t, b, i = x.shape
    xw = gemm.matmul(x.reshape(-1, i), w_ih)
    biases = [v for v in (b_ih, None if cell == "gru" else b_hh) if v is not None]
    if biases:  # one pass over xw (GRU's b_hn sits inside the reset gate)
        xw += sum(biases[1:], biases[0])
    xw = xw.reshape(t, b, -1)
    if cell == "gru":
        bias = b_hh if b_hh is not None else np.zeros(xw.shape[2], xw.dtype)
        return kernel("gru_forward")(xw, w_hh, bias, *initial)
    if cell == "lstm":
        return kernel("lstm_forward")(xw, w_hh, w_hr, *initial)
    return kernel("rnn_forward")(xw, w_hh, cell.removeprefix("rnn_"), *initial)


def recurrent_final_state(x: np.ndarray, w_ih, w_hh, b_ih, b_hh, cell: str,
                          w_hr=None, initial: tuple = ()) -> tuple[np.ndarray, tuple]:
    """Inference only, on arrays: one layer over x (T, B, I) from `initial` (a state this
    returned; () for zeros), as `recurrent`; returns every hidden state and the state
    after the last step, (h,) or LSTM's (h, c). Recursive decoding calls it one step at
    a time."""
    saved = _recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, cell, w_hr, initial)
    return saved[0], ((saved[0][-1], saved[1][-1]) if cell == "lstm" else (saved[0][-1],))


@_profiled
def recurrent(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
              cell: str, w_hr: Tensor | None = None, initial: tuple[Tensor, ...] = (),
              cell_states: bool = False) -> Tensor:
    """One recurrent layer over x (T, B, I), time-major, PyTorch's equations: every
    hidden state (T, B, H). cell: "rnn_tanh", "rnn_relu", "lstm" or "gru"; w_ih (I, G),
    w_hh (H, G), biases (G,) or None, G = gates x H in PyTorch's gate order; w_hr (H, P):
    LSTM's projection (PyTorch's proj_size), whose P outputs are then the hidden states
    (w_hh (P, G)). initial: the state to start from, GRU's (h0,) or LSTM's (h0, c0), each
    (B, H), or () for zeros; cell_states (LSTM): return the hidden and cell states side by
    side, (T, B, 2H), so a final state can be handed on.

    The input projection of all steps is one GEMM; the recurrence and its backward
    through time are the kernels of ndwork.kernels.recurrent, which keep only what the
    backward needs (see there)."""
    if initial and cell not in ("lstm", "gru") or cell_states and cell != "lstm":
        raise ValueError(f"a {cell} layer starts from zeros and returns hidden states only")
    data = [None if w is None else w.data for w in (b_ih, b_hh, w_hr)]
    start = tuple(s.data for s in initial)
    saved = _recurrent_forward(x.data, w_ih.data, w_hh.data, data[0], data[1], cell, data[2],
                               start)
    x2 = x.data.reshape(-1, x.shape[2])
    hidden = saved[0].shape[2]

    def backward_fn(g):
        dh = g[..., :hidden] if cell_states else g
        if cell == "gru":
            dxw, dw_hh, db_hh, *d_initial = kernel("gru_backward")(w_hh.data, *saved, dh,
                                                                   *start)
        elif cell == "lstm":
            h0, c0 = start or (None, None)
            dc = g[..., hidden:] if cell_states else None
            dxw, dw_hh, *rest = kernel("lstm_backward")(w_hh.data, *saved, dh, data[2], h0, c0,
                                                        dc)
            dw_hr, d_initial = rest[:1 if w_hr is not None else 0], rest[len(rest) - len(start):]
        else:
            dxw, dw_hh = kernel("rnn_backward")(w_hh.data, *saved, dh, cell.removeprefix("rnn_"))
            d_initial = []
        dxw2 = dxw.reshape(-1, dxw.shape[2])
        dx = gemm.matmul(dxw2, w_ih.data.T).reshape(x.shape) if x.requires_grad else None
        grads = [dx, gemm.matmul(x2.T, dxw2), dw_hh]
        db = dxw2.sum(axis=0)
        if b_ih is not None:
            grads.append(db)
        if b_hh is not None:
            grads.append(db_hh if cell == "gru" else db)
        if w_hr is not None:
            grads += dw_hr
        return tuple(grads + list(d_initial))

    parents = [x, w_ih, w_hh] + [p for p in (b_ih, b_hh, w_hr) if p is not None] + list(initial)
    out = np.concatenate(saved[:2], axis=2) if cell_states else saved[0]
    return Tensor(out, parents, backward_fn)


@_profiled
def slstm(xw: Tensor, r: Tensor, b: Tensor) -> Tensor:
    """xLSTM's sLSTM cell over xw (T, B, 4H), time-major, gate pre-activations (i, f, z, o)
    from the input; r (NH, dh, 4dh) the head-wise recurrent weights, b (4H,): every
    hidden state (T, B, H). See ndwork.kernels.xlstm."""
    saved = kernel("slstm_forward")(xw.data, r.data, b.data)

    def backward_fn(dy):
        return kernel("slstm_backward")(r.data, *saved, dy)

    return Tensor(saved[0], (xw, r, b), backward_fn)


@_profiled
def mlstm(q: Tensor, k: Tensor, v: Tensor, ig: Tensor, fg: Tensor) -> Tensor:
    """xLSTM's mLSTM cell in its parallel form: q, k, v (B, S, NH, d), input and forget
    gate pre-activations (B, S, NH) -> (B, S, NH, d). See ndwork.kernels.xlstm."""
    out = kernel("mlstm_forward")(q.data, k.data, v.data, ig.data, fg.data)

    def backward_fn(dh):
        return kernel("mlstm_backward")(q.data, k.data, v.data, ig.data, fg.data, dh)

    return Tensor(out, (q, k, v, ig, fg), backward_fn)


@_profiled
def headwise_linear(x: Tensor, w: Tensor) -> Tensor:
    """A block-diagonal linear map: x (..., NH * d_in) split into NH heads, each times its
    own w[h] (NH, d_in, d_out) -> (..., NH * d_out). One batched GEMM over heads
    (measured several times faster than einsum, which does not batch them through BLAS)."""
    heads, d_in, d_out = w.shape
    lead = x.shape[:-1]
    xh = x.data.reshape(-1, heads, d_in).transpose(1, 0, 2)  # (NH, N, d_in)
    y = np.matmul(xh, w.data).transpose(1, 0, 2)

    def backward_fn(g):
        gh = g.reshape(-1, heads, d_out).transpose(1, 0, 2)  # (NH, N, d_out)
        dx = (np.matmul(gh, w.data.transpose(0, 2, 1)).transpose(1, 0, 2).reshape(x.shape)
              if x.requires_grad else None)
        return dx, np.matmul(xh.transpose(0, 2, 1), gh)

    return Tensor(y.reshape(*lead, heads * d_out), (x, w), backward_fn)


@_profiled
def depthwise_causal_conv(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Each channel convolved causally with its own kernel: x (B, T, C), w (K, C), b (C,);
    y[:, t] = b + sum_k w[k] x[:, t - (K - 1 - k)] (zeros before the start), PyTorch's
    Conv1d(groups=C, padding=K - 1) with the right end cut, w[k, c] = torch_w[c, 0, k]."""
    t, size = x.shape[1], w.shape[0]
    y = np.broadcast_to(b.data, x.shape).copy()
    for k in range(size):
        shift = size - 1 - k
        if shift < t:
            y[:, shift:] += w.data[k] * x.data[:, : t - shift]

    def backward_fn(g):
        dx, dw = np.zeros_like(x.data), np.zeros_like(w.data)
        for k in range(size):
            shift = size - 1 - k
            if shift < t:
                dx[:, : t - shift] += w.data[k] * g[:, shift:]
                dw[k] = (g[:, shift:] * x.data[:, : t - shift]).sum(axis=(0, 1))
        return dx, dw, g.sum(axis=(0, 1))

    return Tensor(y, (x, w, b), backward_fn)


@_profiled
def point_loss(y_hat: Tensor, y: np.ndarray, mask: np.ndarray, kind: str,
               param: float = 0.0) -> Tensor:
    """Masked mean loss of y_hat (B, h) against y (B, h); a 0-d tensor."""
    value, grad = kernel("point_loss")(kind, y_hat.data, y, mask, param)
    return Tensor(np.asarray(value, dtype=y_hat.data.dtype), (y_hat,),
                  lambda g: (grad * g,))


@_profiled
def multi_quantile_loss(y_hat: Tensor, y: np.ndarray, mask: np.ndarray,
                        quantiles: np.ndarray) -> Tensor:
    """Mean pinball loss of y_hat (B, h, Q) over the quantiles (Q,); a 0-d tensor."""
    value, grad = kernel("mqloss")(y_hat.data, y, mask, quantiles)
    return Tensor(np.asarray(value, dtype=y_hat.data.dtype), (y_hat,),
                  lambda g: (grad * g,))
