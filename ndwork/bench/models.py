"""Model suite: training throughput, predict latency and peak memory per model, the
numba path against the numpy reference path in the same run, and achieved GFLOP/s
against the float32 GEMM peak measured by the same run.

Training is timed end to end as a user times it: `NeuralForecast.fit` for
`max_steps` steps, including window sampling, scaling and the optimizer.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import tracemalloc

import ndwork
from ndwork import NeuralForecast
from ndwork.bench.common import gemm_peak, latencies, table
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.models import MLP, NBEATS, NHITS, DLinear, NLinear, TiDE

# (name, model class, kwargs, dataset): NeuralForecast's default sizes at 1,024 windows a
# step are compute-bound; small networks at 64 windows are overhead-bound.
CONFIGS = [
    ("MLP default", MLP, {}, "synthetic"),
    ("NHITS default", NHITS, {}, "synthetic"),
    ("NBEATS default", NBEATS, {}, "synthetic"),
    ("TiDE default", TiDE, {}, "synthetic"),
    ("MLP small", MLP, dict(hidden_size=128, windows_batch_size=64), "air"),
    ("NHITS small", NHITS, dict(mlp_units=3 * [[128, 128]], windows_batch_size=64), "air"),
    ("NBEATS small", NBEATS, dict(mlp_units=3 * [[128, 128]], windows_batch_size=64), "air"),
    ("DLinear", DLinear, dict(windows_batch_size=64), "air"),
    ("NLinear", NLinear, dict(windows_batch_size=64), "air"),
]
FLOP_MODELS = (MLP, NHITS, NBEATS)  # whose work is all in the dense layers


def dataset(name: str):
    if name == "air":
        return air_passengers(), "MS"
    return synthetic_panel(128, 1000, seed=0), "D"


def dense_flops_per_window(model) -> float:
    """Forward + backward FLOPs of the dense layers per window: 6 * sum(in * out)."""
    return 6.0 * sum(s[0] * s[1] for name, s in model.spec.shapes.items()
                     if name.endswith(".weight") and len(s) == 2)


def time_fit(cls, kwargs, df, freq, steps, repeat) -> list[float]:
    """Seconds per fit; one untimed warm-up fit first (kernel caches, BLAS buffers)."""
    times = []
    for i in range(repeat + 1):
        nf = NeuralForecast([cls(h=12, input_size=24, max_steps=steps, **kwargs)], freq)
        start = time.perf_counter()
        nf.fit(df, verbose=False)
        if i:
            times.append(time.perf_counter() - start)
    return times


def fit_peak_memory(cls, kwargs, df, freq, steps) -> int:
    """Peak bytes allocated during fit (tracemalloc, in its own untimed run)."""
    nf = NeuralForecast([cls(h=12, input_size=24, max_steps=steps, **kwargs)], freq)
    tracemalloc.start()
    nf.fit(df, verbose=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def profiler_overhead(quick: bool = False) -> dict:
    """Steps/s of the same fit unprofiled, under ndwork.profile() and under
    ndwork.profile(memory=True), on fpp3-like data (148 series, h=24, input 96, MLP)."""
    df = synthetic_panel(148, 300, seed=0)
    steps, repeat = (5, 1) if quick else (20, 3)
    settings = {"unprofiled": None, "profiled": {}, "profiled, memory=True": {"memory": True}}
    times = {name: [] for name in settings}
    for i in range(repeat + 1):  # interleaved, so drifts of a shared machine hit all three
        for name, kwargs in settings.items():
            nf = NeuralForecast([MLP(h=24, input_size=96, max_steps=steps)], "D")
            block = ndwork.profile(**kwargs) if kwargs is not None else contextlib.nullcontext()
            start = time.perf_counter()
            with block:
                nf.fit(df, verbose=False)
            if i:
                times[name].append(time.perf_counter() - start)
    rates = {name: steps / statistics.median(t) for name, t in times.items()}
    return {"steps/s": rates,
            "slowdown": {name: rates["unprofiled"] / rate for name, rate in rates.items()}}


def run(quick: bool = False, configs=None) -> dict:
    peak = gemm_peak()
    rows = []
    for name, cls, kwargs, data in configs or CONFIGS:
        df, freq = dataset(data)
        compute_bound = data == "synthetic"
        steps = (10 if quick else 40) if compute_bound else (20 if quick else 200)
        repeat = 1 if quick else 3
        row = {"config": name}
        for kernels in ("numba", "numpy"):
            with ndwork.optimizations(kernels=kernels):
                times = time_fit(cls, kwargs, df, freq, steps, repeat)
            row[f"steps/s {kernels}"] = steps / statistics.median(times)
        row["peak MiB"] = fit_peak_memory(cls, kwargs, df, freq, min(steps, 5)) / 2**20
        row["numba/numpy"] = row["steps/s numba"] / row["steps/s numpy"]
        model = cls(h=12, input_size=24, **kwargs)
        row["windows/s"] = row["steps/s numba"] * model.windows_batch_size
        if isinstance(model, FLOP_MODELS):
            gflops = dense_flops_per_window(model) * row["windows/s"] / 1e9
            row["GFLOP/s"] = gflops
            row["% GEMM peak"] = 100 * gflops / peak
        nf = NeuralForecast([cls(h=12, input_size=24, max_steps=5, **kwargs)], "MS")
        nf.fit(air_passengers(), verbose=False)
        lat = latencies(nf.predict, calls=50 if quick else 300)
        row["predict ms median"] = lat["median_s"] * 1e3
        row["predict ms p99"] = lat["p99_s"] * 1e3
        rows.append(row)
    return {"rows": rows, "gemm_peak_gflops": peak, "profiler": profiler_overhead(quick),
            "note": "fit timed end to end for max_steps steps; median of repeats; "
                    "predict = warm nf.predict() on a model fitted to one series (AirPassengers)"}


def render(results: dict) -> str:
    cols = ["config", "steps/s numba", "steps/s numpy", "numba/numpy", "windows/s", "GFLOP/s",
            "% GEMM peak", "predict ms median", "predict ms p99", "peak MiB"]
    profiler = results["profiler"]
    overhead = "\n".join(f"  {name}: {rate:.3g} steps/s ({profiler['slowdown'][name]:.2f}x slower)"
                         for name, rate in profiler["steps/s"].items())
    return (table(results["rows"], cols)
            + f"\n\nfloat32 GEMM peak (n=2048): {results['gemm_peak_gflops']:.0f} GFLOP/s"
            + f"\n\nprofiler overhead (MLP, 148 series, h=24, input 96):\n{overhead}")
