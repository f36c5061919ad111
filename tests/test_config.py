"""The one configuration object and its context manager."""

import threading

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import ndwork
from ndwork.config import active
from ndwork.kernels import compiled, kernel, reference


def test_context_switches_kernels_and_restores():
    assert active().kernels == "numba"
    assert kernel("relu_forward") is compiled("relu_forward")
    with ndwork.optimizations(kernels="numpy") as opts:
        assert opts.kernels == "numpy" and active() is opts
        assert kernel("relu_forward") is reference("relu_forward")
    assert kernel("relu_forward") is compiled("relu_forward")


def test_threads_set_numba_and_blas_together():
    before = numba.get_num_threads()
    with ndwork.optimizations(threads=1):
        assert numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert numba.get_num_threads() == before


def test_configuration_is_per_thread():
    seen = {}

    def worker():
        seen["kernels"] = active().kernels

    with ndwork.optimizations(kernels="numpy"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["kernels"] == "numba"


def test_precision_policy():
    assert ndwork.Optimizations().dtypes.compute == "float32"
    mixed = ndwork.Optimizations(precision="bf16").dtypes
    assert (mixed.compute, mixed.param, mixed.output) == ("float32",) * 3  # master weights
    assert mixed.low.name == "bfloat16" and mixed.store_low and not mixed.per_shape
    auto = ndwork.Optimizations(precision="auto").dtypes
    assert auto.per_shape and not auto.store_low
    with pytest.raises(ValueError, match="precision='fp8' is not known"):
        ndwork.Optimizations(precision="fp8")


def test_overlapping_thread_limits_restore_blas():
    """threadpoolctl's limits are process-wide: interleaved enter/exit from two threads
    (A enters, B enters, A exits, B exits) used to leave BLAS pinned to one thread."""
    before = [pool["num_threads"] for pool in threadpool_info()]
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with ndwork.optimizations(threads=1):
            a_in.set()
            b_in.wait()
        a_out.set()

    def b():
        a_in.wait()
        with ndwork.optimizations(threads=1):
            b_in.set()
            a_out.wait()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [pool["num_threads"] for pool in threadpool_info()] == before


def test_threading_layer_is_safe_for_concurrent_parallel_launches():
    from ndwork.config import threading_layer

    assert threading_layer() in ("tbb", "omp")  # workqueue aborts on concurrent launches


def test_two_fits_in_two_threads_with_flash_attention():
    from ndwork import NeuralForecast
    from ndwork.datasets import synthetic_panel
    from ndwork.models import VanillaTransformer

    df = synthetic_panel(2, 300, seed=0)

    def fit(seed):
        model = VanillaTransformer(h=8, input_size=256, max_steps=3, hidden_size=16, n_head=2,
                                   conv_hidden_size=8, windows_batch_size=4, random_seed=seed)
        state = NeuralForecast([model], "D").fit(df, verbose=False).states[0]
        return np.array([loss for _, loss in state.train_losses])

    serial = [fit(seed) for seed in (1, 2)]
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, fit(s))) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # concurrent BLAS calls may split their sums differently: equal up to float32 noise
    for seed, losses in zip((1, 2), serial, strict=True):
        np.testing.assert_allclose(results[seed], losses, rtol=1e-4)


def test_the_dtype_policy_decides_every_dtype(monkeypatch):
    """A policy swapped in for fp32 reaches data, weights, moments, statistics, forecasts."""
    from ndwork import NeuralForecast, config
    from ndwork.datasets import air_passengers
    from ndwork.models import PatchTST

    f64 = np.dtype(np.float64)
    monkeypatch.setitem(config._policies(), "fp32", config.DtypePolicy(f64, f64, f64))
    model = PatchTST(h=12, input_size=24, max_steps=2, hidden_size=16, n_heads=2,
                     linear_hidden_size=8, encoder_layers=1)
    nf = NeuralForecast([model], "MS").fit(air_passengers(), verbose=False)
    state = nf.states[0]
    assert nf.panel.y.dtype == f64 and state.params.dtype == f64
    assert {v.dtype for v in state.optimizer.buffers.values()} == {f64}
    assert {v.dtype for v in state.buffers.values()} == {f64}
    assert {v.dtype for v in model.constants.values()} == {f64}
    assert nf.predict()["PatchTST"].dtype == f64
