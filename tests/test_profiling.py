"""The op-level profiler: what it counts, that its times add up, and that it is off by
default."""

import time
import tracemalloc

import numpy as np
import pytest

import ndwork
from ndwork import NeuralForecast, profiling
from ndwork.autodiff import Tensor, backward, ops
from ndwork.datasets import air_passengers
from ndwork.models import MLP

# The op times must account for the block's wall time measured outside the profiler.
WALL_RTOL = 0.10


def test_profile_counts_ops_flops_and_time():
    steps, windows, hidden = 4, 32, 16
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=steps, hidden_size=hidden,
                             num_layers=2, windows_batch_size=windows)], "MS")
    nf.fit(air_passengers(), verbose=False)  # warm: kernels loaded
    with ndwork.profile() as prof:
        nf.fit(air_passengers(), verbose=False)
    table = prof.table().set_index("op")
    assert table.loc["linear", "calls"] == 3 * steps  # two hidden layers and the output
    multiply_adds = windows * (24 * hidden + hidden * hidden + hidden * 12)
    assert table.loc["linear", "GFLOP"] * 1e9 == pytest.approx(2 * steps * multiply_adds)
    assert table.loc["linear backward", "calls"] == 3 * steps
    assert table.loc["linear backward", "GFLOP"] == pytest.approx(2 * table.loc["linear",
                                                                               "GFLOP"])
    assert table.loc[profiling.PROFILER_ROW, "self ms"] > 0
    assert prof.timeline and all(rss > 0 for _, rss, _ in prof.timeline)


def _operands(n=500):
    rng = np.random.default_rng(0)
    return [Tensor(rng.normal(size=(n, n)).astype(np.float32), requires_grad=True)
            for _ in range(2)]


def _big_matmuls(a, b, repeat=16):
    """Work that is all in ops (forward only: the backward pass has engine work of its
    own, seeding and accumulating gradients, that is rightly not any op's)."""
    for _ in range(repeat):
        ops.matmul(a, b)


def test_gemms_are_timed_by_shape_inside_the_ops():
    steps, windows, hidden = 3, 32, 16
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=steps, hidden_size=hidden,
                             num_layers=2, windows_batch_size=windows)], "MS")
    with ndwork.profile() as prof:
        nf.fit(air_passengers(), verbose=False)
    threads = ndwork.config.numba.config.NUMBA_NUM_THREADS
    forward = [f"{windows}x24x{hidden} NN", f"{windows}x{hidden}x{hidden} NN",
               f"{windows}x{hidden}x12 NN"]
    weight_grads = [f"24x{windows}x{hidden} TN", f"{hidden}x{windows}x{hidden} TN",
                    f"{hidden}x{windows}x12 TN"]
    for label in forward + weight_grads:
        assert prof.gemm_calls[f"{label} threads={threads}"] == steps, label
        assert prof.gemm_blas[f"{label} threads={threads}"] in ("numpy", "mkl", "onednn")
    gemm = sum(prof.gemm_seconds.values())
    linear = prof.seconds["linear"] + prof.seconds["linear backward"]
    assert 0 < gemm < linear  # inside the linear ops


def test_op_times_add_up_to_the_wall_time():
    """Ops that do all the work of a block: their self times sum to its wall time."""
    a, b = _operands()
    _big_matmuls(a, b, repeat=1)
    start = time.perf_counter()
    with ndwork.profile() as prof:
        _big_matmuls(a, b)
    wall = time.perf_counter() - start
    table = prof.table().set_index("op")
    ops_ms = table.drop([profiling.PROFILER_ROW, profiling.OTHER_ROW])["self ms"].sum()
    assert ops_ms == pytest.approx(wall * 1e3, rel=WALL_RTOL)


def test_self_time_excludes_the_ops_an_op_runs():
    """An op that runs other ops: self time is its own part, and nothing counts twice."""
    @ops._profiled
    def outer(a, b):
        for _ in range(6):
            backward(ops.matmul(a, b))
        return ops.add(a, b)

    a, b = _operands(400)
    outer(a, b)
    start = time.perf_counter()
    with ndwork.profile() as prof:
        outer(a, b)
    wall = time.perf_counter() - start
    table = prof.table().set_index("op")
    inner_ms = table.loc[["matmul", "matmul backward", "add"], "total ms"].sum()
    assert table.loc["outer", "self ms"] < 0.2 * table.loc["outer", "total ms"]
    children_ms = table.loc["outer", "total ms"] - table.loc["outer", "self ms"]
    overhead_ms = table.loc[profiling.PROFILER_ROW, "self ms"]  # the inner ops' bookkeeping
    assert inner_ms <= children_ms <= inner_ms + overhead_ms
    ops_ms = table.drop([profiling.PROFILER_ROW, profiling.OTHER_ROW])["self ms"].sum()
    assert ops_ms <= wall * 1e3 * (1 + WALL_RTOL)  # self == total would count twice


def test_memory_tracing_is_off_unless_asked():
    with ndwork.profile():
        assert not tracemalloc.is_tracing()
    with ndwork.profile(memory=True) as prof:
        assert tracemalloc.is_tracing()
        _big_matmuls(*_operands(50), repeat=2)
        prof._next_sample = 0.0
        ops.add(Tensor(np.ones(3)), Tensor(np.ones(3)))
    assert not tracemalloc.is_tracing()
    assert prof.timeline[-1][2] > 0  # traced bytes


def test_profiler_is_off_outside_the_block():
    assert profiling.current() is None
    with ndwork.profile() as prof:
        assert profiling.current() is prof
    assert profiling.current() is None
    assert np.isfinite(prof.wall_seconds)


def test_sequence_ops_count_their_flops():
    from ndwork.models import LSTM, TCN

    for model, op, per_call in (
            (LSTM(h=12, input_size=24, encoder_hidden_size=8, decoder_hidden_size=8,
                  encoder_n_layers=1, windows_batch_size=4, max_steps=1), "recurrent",
             2 * 4 * 24 * 32 * (1 + 8)),  # B * T rows, 4H gates, (I + H) inputs each
            (TCN(h=12, input_size=24, encoder_hidden_size=8, decoder_hidden_size=8,
                 dilations=[1], windows_batch_size=4, max_steps=1), "causal_conv1d",
             2 * 4 * 24 * 8 * 2 * 1)):  # B * T * C_out outputs, K * C_in each
        with ndwork.profile() as prof:
            NeuralForecast([model], "MS").fit(air_passengers(), verbose=False)
        table = prof.table().set_index("op")
        assert table.loc[op, "GFLOP"] * 1e9 == pytest.approx(per_call)
        assert table.loc[f"{op} backward", "GFLOP"] * 1e9 == pytest.approx(2 * per_call)
