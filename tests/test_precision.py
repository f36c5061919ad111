"""Mixed precision: conversions, low-precision GEMMs and dense layers against their
references, the dtype policy in training, fp16 loss scaling, checkpoints, memory."""

import json
import re
import warnings

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close_f32

import ndwork
from ndwork import NeuralForecast
from ndwork.autodiff.tensor import Tensor
from ndwork.bench.precision import step as step_memory
from ndwork.datasets import air_passengers
from ndwork.kernels import compiled, gemm, reference
from ndwork.kernels.precision import BF16, FP16, to_low, widen
from ndwork.models import MLP, NHITS
from ndwork.training import checkpoint, trainer
from ndwork.training.loss_scaling import LossScaler

SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99,
                     65520.0, 1e5, 3.4e38, 6e-5, 6e-8, 3e-8, 1e-40, -1e-45, 1.00390625,
                     1.01171875, 0.333333], np.float32)


def _all_kinds_of_floats(rng, n=2**20):
    """Random bit patterns (NaN payloads, subnormals, every exponent) and the specials."""
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([SPECIALS, bits.view(np.float32)])


@pytest.mark.parametrize("name", ["round_bf16", "round_fp16"])
def test_rounding_kernels_are_bit_identical_to_the_references(name, rng):
    x = _all_kinds_of_floats(rng)
    with np.errstate(all="ignore"):
        want = reference(name)(x).view(np.uint16)
    assert np.array_equal(compiled(name)(x).view(np.uint16), want)
    # the references are the libraries' casts: ml_dtypes for bfloat16, numpy for float16
    with np.errstate(all="ignore"):
        library = x.astype(ml_dtypes.bfloat16 if name == "round_bf16" else np.float16)
    assert np.array_equal(want, library.view(np.uint16))


def test_every_float16_exponent_rounds_as_numpy(rng):
    """Every float32 whose exponent lands in or next to float16's range, in steps that
    hit every rounding class (ties, carries into the exponent, subnormals)."""
    significands = np.concatenate([np.arange(0, 2**23, 4099, dtype=np.uint32),
                                   np.array([0x1000, 0x3000, 0x2000, 0x1FFF, 0x7FF000, 0x7FFFFF],
                                            np.uint32)])
    exponents = np.arange(0x60, 0x92, dtype=np.uint32) << 23
    x = (exponents[:, None] | significands[None, :]).reshape(-1)
    x = np.concatenate([x, x | np.uint32(0x80000000)]).view(np.float32)
    with np.errstate(over="ignore"):
        assert np.array_equal(compiled("round_fp16")(x).view(np.uint16),
                              x.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("name, dtype", [("widen_bf16", BF16), ("widen_fp16", FP16)])
def test_widening_kernels_are_exact_on_every_16_bit_value(name, dtype):
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dtype)
    want = every.astype(np.float32).view(np.uint32)
    for implementation in (compiled(name), reference(name)):
        got = implementation(every).view(np.uint32)
        nan = np.isnan(want.view(np.float32))
        assert np.array_equal(got[~nan], want[~nan])  # signed zeros, subnormals, infinities
        assert np.isnan(got.view(np.float32)[nan]).all()


def test_widening_is_exact_and_to_low_keeps_low_arrays(rng):
    x = rng.standard_normal((33, 17)).astype(np.float32)
    low = to_low(x, BF16)
    assert low.dtype == BF16 and to_low(low, BF16) is low
    assert np.array_equal(compiled("widen_bf16")(low), low.astype(np.float32))
    assert np.array_equal(reference("widen_bf16")(low), low.astype(np.float32))
    assert np.array_equal(widen(to_low(x, FP16)), x.astype(np.float16).astype(np.float32))
    assert widen(x) is x
    # bfloat16 -> float16 goes through the exact float32 value
    assert np.array_equal(to_low(low, FP16), low.astype(np.float32).astype(np.float16))


@pytest.mark.parametrize("m, k, n", [(1, 24, 1024), (1, 1023, 511), (3, 512, 12), (1, 2, 3)])
def test_bf16_weights_matmul_matches_fp64_of_the_rounded_weights(m, k, n, rng):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = to_low(rng.standard_normal((k, n)).astype(np.float32), BF16)
    want = x.astype(np.float64) @ widen(w).astype(np.float64)
    assert_close_f32(compiled("bf16_weights_matmul")(x, w), want)
    assert_close_f32(reference("bf16_weights_matmul")(x, w), want)
    assert_close_f32(gemm.matmul(x, w), want)  # a small product with bf16 weights


def _fp64_of_rounded(a, b):
    return widen(a).astype(np.float64) @ widen(b).astype(np.float64)


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("threads", [None, 1], ids=["native-if-available", "float32-fallback"])
def test_low_precision_gemm_equals_fp64_of_the_rounded_inputs(dtype, threads, rng):
    """Native (oneDNN's bf16 on a CPU with AVX512-BF16) or the float32 fallback: both
    accumulate in float32, so both match the fp64 product of the rounded operands."""
    a = to_low(rng.standard_normal((300, 256)).astype(np.float32), dtype)
    b = to_low(rng.standard_normal((256, 200)).astype(np.float32), dtype)
    with ndwork.optimizations(threads=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        for left, right in ((a, b), (np.ascontiguousarray(a.T).T, b),
                            (a, np.ascontiguousarray(b.T).T)):
            out = gemm.matmul(left, right)
            assert out.dtype == np.float32
            assert_close_f32(out, _fp64_of_rounded(left, right))


@pytest.mark.parametrize("isa,reason", [
    (["avx2", "avx512_bf16"], r"oneDNN cannot be limited to threads=1"),
    (["avx2"], r"this CPU \(Some CPU\) has none of avx512_bf16, amx_bf16")])
def test_a_missing_native_gemm_warns_once_and_names_the_fallback(monkeypatch, isa, reason):
    if "onednn" not in ndwork.config.available_blas():
        pytest.skip("the reason named first is then the missing oneDNN wheel")
    monkeypatch.setattr(gemm, "cpu", lambda: {"model": "Some CPU", "isa": isa})
    gemm._native_reason.cache_clear()
    gemm._warn_fallback.cache_clear()
    a = np.ones((300, 256), BF16)
    with ndwork.optimizations(threads=1), pytest.warns(
            gemm.PrecisionFallbackWarning,
            match=rf"precision='bf16'.*GEMMs run in float32 here: {reason}.*filterwarnings"):
        gemm.matmul(a, a.T)
    with ndwork.optimizations(threads=1), warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        gemm.matmul(a, a.T)
    gemm._native_reason.cache_clear()  # the real CPU's answer for the tests that follow
    assert issubclass(ndwork.PrecisionFallbackWarning, UserWarning)


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_low_precision_dense_layer_matches_its_reference(dtype, activation, rng):
    x = to_low(rng.standard_normal((512, 96)).astype(np.float32), dtype)
    w = to_low((rng.standard_normal((96, 256)) * 0.1).astype(np.float32), dtype)
    b = rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal((512, 256)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        y = compiled("linear_forward")(x, w, b, activation)
        assert_close_f32(y, reference("linear_forward")(x, w, b, activation))
        kept = to_low(y, dtype)  # a hidden layer keeps its output low
        got = compiled("linear_backward")(x, w, kept, dy, activation)
        want = reference("linear_backward")(x, w, kept, dy, activation)
    for g, r in zip(got, want, strict=True):
        assert g.dtype == np.float32
        assert_close_f32(g, r)


def _panel():
    return air_passengers()


def _mlp(**kwargs):
    return MLP(**{**dict(h=12, input_size=24, hidden_size=256, windows_batch_size=256,
                         max_steps=5, scaler_type="standard", enable_progress_bar=False),
                  **kwargs})


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_fp32_master_weights_and_low_activations(precision):
    df = _panel()
    with ndwork.optimizations(precision=precision), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        nf = NeuralForecast([_mlp()], freq="MS").fit(df)
        state = nf.states[0]
        assert state.params.dtype == np.float32 and state.precision == precision
        assert all(v.dtype == np.float32 for v in state.optimizer.buffers.values())
        assert (state.loss_scaler is not None) == (precision == "fp16")
        model, batch = nf.models[0], _batch(nf)
        out, p = trainer.forward(model, state.params, batch, None)
        kept = {t.stored.dtype for t in _graph(out)}
        assert kept == {np.dtype(np.float32), BF16 if precision == "bf16" else FP16}
        hidden = [t for t in _graph(out) if t.stored.itemsize == 2]
        assert len(hidden) == 2 and all(t.data.dtype == np.float32 for t in hidden)  # 2 layers
        assert out.stored.dtype == np.float32  # the head stays float32
        forecast = nf.predict()
    assert forecast["MLP"].dtype == np.float32 and np.isfinite(forecast["MLP"]).all()


def _graph(root):
    seen, stack = {}, [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.parents)
    return list(seen.values())


def _batch(nf, windows=256):
    model = nf.models[0]
    sampler_windows = np.stack([np.arange(windows) % 100, np.zeros(windows, int)], axis=1)
    return trainer.make_batch(model, nf.panel, sampler_windows)


def test_bf16_forecasts_read_a_bfloat16_copy_made_once_per_step():
    df = _panel()
    nf = NeuralForecast([NHITS(h=12, input_size=24, max_steps=3, scaler_type="standard",
                               enable_progress_bar=False)], freq="MS").fit(df)
    state = nf.states[0]
    fp32 = nf.predict()["NHITS"].to_numpy()
    with ndwork.optimizations(precision="bf16"):
        first = trainer.inference_weights(state)
        assert first.dtype == BF16 and trainer.inference_weights(state) is first
        bf16 = nf.predict()["NHITS"].to_numpy()
    fp32_weights = trainer.inference_weights(state)  # fp32: a view of the master weights
    assert fp32_weights.base is state.params and trainer.inference_weights(state) is fp32_weights
    np.testing.assert_allclose(bf16, fp32, rtol=1e-2)  # bf16 weights: ~3 significant digits
    nf.fit(df, use_init_models=False)  # a warm start changes the weights in place ...
    with ndwork.optimizations(precision="bf16"):
        again = trainer.inference_weights(nf.states[0])
    assert again is not first  # ... and moves the step: a fresh copy
    assert np.array_equal(again, to_low(nf.states[0].params, BF16))


def test_model_precision_option_takes_lightning_names():
    df = _panel()
    nf = NeuralForecast([_mlp(precision="bf16-mixed")], freq="MS").fit(df)
    assert nf.states[0].precision == "bf16"
    assert ndwork.Optimizations().precision == "fp32"  # the scope ended with the fit


def test_unknown_precision_names_the_known_ones():
    with pytest.raises(ValueError, match=r"precision='fp8' is not known; use one of "
                                         r"\('fp32', 'bf16', 'fp16', 'auto', 'fp64'\)"):
        ndwork.Optimizations(precision="fp8")


def test_loss_scaler_grows_backs_off_and_gives_up():
    scaler = LossScaler(scale=8.0, growth_interval=3)
    assert [scaler.update(True) for _ in range(3)] == [True] * 3 and scaler.scale == 16.0
    assert scaler.update(False) is False and scaler.scale == 8.0 and scaler.skipped == 1
    assert scaler.good_steps == 0
    scaler.scale = 2.0**-24
    with pytest.raises(FloatingPointError, match="non-finite while the fp16 loss scale fell"):
        scaler.update(False)


def test_fp16_skips_overflowing_steps_counts_them_and_keeps_the_weights(monkeypatch):
    """A gradient that overflows at the current scale skips its step (weights and
    moments untouched), halves the scale and is counted; later steps apply again."""
    df = _panel()
    real = trainer.loss_and_grad
    calls = []

    def overflow_twice(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls.append(kwargs.get("loss_scale", args[5] if len(args) > 5 else 1.0))
        if len(calls) in (2, 3):
            grads = grads.copy()
            grads[0] = np.inf
        return loss, grads

    monkeypatch.setattr(trainer, "loss_and_grad", overflow_twice)
    real_skip = trainer.Optimizer.skip
    weights = []

    def skip(self):  # the weights as the skipped step leaves them
        real_skip(self)
        weights.append(state_params[0].copy())

    monkeypatch.setattr(trainer.Optimizer, "skip", skip)
    state_params = []
    real_update = trainer.Optimizer.update

    def update(self, params, grads, lr):
        state_params[:] = [params]
        real_update(self, params, grads, lr)
        weights.append(params.copy())

    monkeypatch.setattr(trainer.Optimizer, "update", update)
    with ndwork.optimizations(precision="fp16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        nf = NeuralForecast([_mlp()], freq="MS")
        nf.fit(df)
    state = nf.states[0]
    assert calls[:4] == [2.0**16, 2.0**16, 2.0**15, 2.0**14]  # backed off twice
    assert state.loss_scaler.skipped == 2 and state.optimizer.skipped == 2
    assert state.optimizer.step == 5 and state.loss_scaler.scale == 2.0**14
    assert np.isfinite(state.params).all()
    # steps 2 and 3 left the weights as step 1 made them; step 4 moved them again
    assert np.array_equal(weights[0], weights[1]) and np.array_equal(weights[0], weights[2])
    assert not np.array_equal(weights[2], weights[3])


def test_loss_scaling_keeps_small_fp16_gradients_from_flushing_to_zero(rng):
    """Where fp16 GEMMs run natively, the output gradient is rounded to fp16: one of
    1e-9 flushes to zero, and the scale carries it into fp16's range."""
    x = to_low(rng.standard_normal((64, 32)).astype(np.float32), FP16)
    w = to_low(rng.standard_normal((32, 16)).astype(np.float32), FP16)
    dy = (rng.standard_normal((64, 16)) * 1e-9).astype(np.float32)
    exact = reference("linear_backward")(x, w.astype(np.float32), x @ w, dy)[1]
    plain = compiled("linear_backward")(x, w, x @ w, dy)[1]
    scale = 2.0**16
    scaled = compiled("linear_backward")(x, w, x @ w, dy * scale)[1] / scale
    assert np.abs(plain).max() < 0.05 * np.abs(exact).max()  # mostly flushed
    assert_close_f32(scaled, exact, rtol=2e-3)


def test_fp16_gradient_matches_fp32_through_the_loss_scale():
    """The scale multiplies the backward and divides the gradient: with it, fp16's
    gradient stays close to fp32's (without it, small gradients would flush to zero)."""
    df = _panel()
    nf = NeuralForecast([_mlp(max_steps=1)], freq="MS").fit(df)
    model, params, batch = nf.models[0], nf.states[0].params, _batch(nf)
    _, fp32 = trainer.loss_and_grad(model, params, batch)
    with ndwork.optimizations(precision="fp16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        _, scaled = trainer.loss_and_grad(model, params, batch, loss_scale=2.0**16)
        _, unscaled = trainer.loss_and_grad(model, params, batch, loss_scale=1.0)
    error = np.abs(scaled - fp32).max() / np.abs(fp32).max()
    assert error < 1e-2
    assert np.abs(scaled - fp32).max() <= np.abs(unscaled - fp32).max()


def test_checkpoint_records_precision_and_loads_under_another(tmp_path):
    df = _panel()
    with ndwork.optimizations(precision="fp16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        nf = NeuralForecast([_mlp()], freq="MS").fit(df)
    nf.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / checkpoint.META).read_text())
    assert meta["models"][0]["precision"] == "fp16"
    assert meta["models"][0]["loss_scaler"]["scale"] == 2.0**16
    loaded = NeuralForecast.load(tmp_path / "run")
    assert loaded.states[0].params.dtype == np.float32  # master weights, as trained
    assert loaded.states[0].loss_scaler == nf.states[0].loss_scaler
    with ndwork.optimizations(precision="bf16"):
        assert np.isfinite(loaded.predict()["MLP"]).all()
    fp32 = loaded.predict()["MLP"].to_numpy()
    assert np.allclose(fp32, nf.predict()["MLP"].to_numpy(), rtol=2e-2)


@pytest.mark.parametrize("edit, problem", [
    ({"precision": "fp8"}, "precision 'fp8' is not one of"),
    ({"precision": "fp64"}, "precision 'fp64' with float32 weights"),
    ({"precision": "bf16"}, "precision 'bf16' with a loss scaler"),
    ({"loss_scaler": {"scale": -1.0, "growth_interval": 2000, "good_steps": 0,
                      "skipped": 0}}, "is not consistent"),
])
def test_inconsistent_precision_metadata_is_a_clear_error(tmp_path, edit, problem):
    df = _panel()
    with ndwork.optimizations(precision="fp16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        nf = NeuralForecast([_mlp(max_steps=1)], freq="MS").fit(df)
    nf.save(tmp_path / "run")
    path = tmp_path / "run" / checkpoint.META
    meta = json.loads(path.read_text())
    meta["models"][0].update(edit)
    path.write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match=problem):
        NeuralForecast.load(tmp_path / "run")


@pytest.mark.parametrize("Model", [MLP, NHITS])
def test_low_precision_halves_what_the_graph_keeps_and_lowers_the_peak(Model):
    """At 1,024 windows, NeuralForecast's hidden sizes: the graph's saved activations
    at least 40% smaller than fp32's, and the step's peak below fp32's."""
    df = _panel()
    model = Model(h=12, input_size=24, windows_batch_size=1024, max_steps=1,
                  scaler_type="standard", enable_progress_bar=False)
    nf = NeuralForecast([model], freq="MS").fit(df)
    params, batch = nf.states[0].params, _batch(nf, 1024)
    fp32 = step_memory(model, params, batch)
    for precision in ("bf16", "fp16"):
        with ndwork.optimizations(precision=precision), warnings.catch_warnings():
            warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
            held, peak = step_memory(model, params, batch)
        assert held <= 0.6 * fp32[0], (precision, held, fp32)
        assert peak < fp32[1], (precision, peak, fp32)


def test_auto_measures_each_layer_shape_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NDWORK_CACHE_DIR", str(tmp_path))
    gemm._PRECISION_CHOICES.__dict__.pop("path", None)
    gemm.clear_choices()
    df = _panel()
    with ndwork.optimizations(precision="auto"):
        NeuralForecast([_mlp(max_steps=2)], freq="MS").fit(df)
    chosen = gemm.precision_choices()
    if gemm._native_reason(BF16, None) is not None:  # nothing to measure here
        assert chosen == {}
        return
    assert chosen and {v.split()[0] for v in chosen.values()} <= {"fp32", "bf16"}
    assert all(re.fullmatch(r"bf16 \(\d+\.\d\dx fp32\)|fp32 \(bf16 \d+\.\d\dx\)", v)
               for v in chosen.values())  # the measured factor beside the choice
    assert all(label.startswith("256x") for label in chosen)
    monkeypatch.setattr(gemm, "_faster_precision", lambda *a: pytest.fail("measured twice"))
    with ndwork.optimizations(precision="auto"):
        NeuralForecast([_mlp(max_steps=2)], freq="MS").fit(df)
    gemm._PRECISION_CHOICES.__dict__.pop("path", None)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_on_low_precision_inputs_equals_fp64_of_the_rounded_inputs(causal, rng):
    """q, k, v stored in bf16 (as the projections keep them under mixed precision):
    flash attention's output and gradients equal float64 attention of their values."""
    from ndwork.autodiff import ops
    from ndwork.kernels.attention import naive_attention_backward, naive_attention_forward

    q, k, v = (to_low(rng.standard_normal((2, 2, 300, 32)).astype(np.float32), BF16)
               for _ in range(3))
    exact = [widen(t).astype(np.float64) for t in (q, k, v)]
    dout = rng.standard_normal((2, 2, 300, 32))
    want, lse = naive_attention_forward(*exact, causal)
    want_grads = naive_attention_backward(*exact, want, lse, dout, causal)
    tensors = [Tensor(t, requires_grad=True) for t in (q, k, v)]
    with ndwork.optimizations(precision="bf16", attention="flash"):
        out = ops.attention(*tensors, causal)
        got_grads = out.backward_fn(dout.astype(np.float32))
    assert out.stored.dtype == np.float32
    assert_close_f32(out.data, want)
    for got, expected in zip(got_grads, want_grads, strict=True):
        assert_close_f32(got, expected)


def test_transformer_keeps_attention_inputs_low():
    from ndwork.models import VanillaTransformer

    df = _panel()
    model = VanillaTransformer(h=12, input_size=24, max_steps=1, hidden_size=32, n_head=2,
                               windows_batch_size=64, scaler_type="standard",
                               enable_progress_bar=False)
    nf = NeuralForecast([model], freq="MS").fit(df)
    batch = _batch(nf, 64)
    with ndwork.optimizations(precision="bf16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        out, _ = trainer.forward(model, nf.states[0].params, batch, None)
        fit = NeuralForecast([model], freq="MS").fit(df)
    attention_inputs = [parent for node in _graph(out) if node.backward_fn is not None
                        and getattr(node.backward_fn, "__qualname__", "").startswith("attention")
                        for parent in node.parents]
    assert attention_inputs and {t.stored.dtype for t in attention_inputs} == {BF16}
    assert np.isfinite(fit.predict()["VanillaTransformer"]).all()


def test_tensor_data_is_always_the_compute_dtype():
    low = to_low(np.linspace(-1, 1, 7, dtype=np.float32), BF16)
    t = Tensor(low)
    assert t.stored is low and t.data.dtype == np.float32 and t.shape == (7,)
    assert np.array_equal(t.data, low.astype(np.float32))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_every_model_trains_and_forecasts_under_mixed_precision(precision):
    from ndwork.models import MODELS

    df = _panel()
    failed = {}
    for name, cls in MODELS.items():
        kwargs = dict(h=6, input_size=24, max_steps=2, enable_progress_bar=False)
        if getattr(cls, "MULTIVARIATE", False):
            kwargs["n_series"] = 1
        with ndwork.optimizations(precision=precision), warnings.catch_warnings():
            warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
            nf = NeuralForecast([cls(**kwargs)], "MS").fit(df)
            forecast = nf.predict()[name].to_numpy()
        if nf.states[0].params.dtype != np.float32 or not np.isfinite(forecast).all():
            failed[name] = forecast[:3]
    assert not failed
