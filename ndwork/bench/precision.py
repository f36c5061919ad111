"""Mixed precision against float32, in one run: GEMM GFLOP/s per precision and backend at
the dense models' shapes, fit steps/s (best of alternating repeats), forecast MAE over
seeds on a public panel, the memory a training step holds, and predict latency.

Precisions: "fp32", "bf16", "fp16" (each GEMM in the low precision where this CPU runs it
natively, else float32 on the low-precision activations: the table says which) and
"auto" (per layer shape, whichever measured faster; activations float32).
"""

from __future__ import annotations

import functools
import time
import tracemalloc
import warnings

import numpy as np

import ndwork
from ndwork import NeuralForecast
from ndwork.bench.common import cpu, latencies, table
from ndwork.config import available_blas, keep_freed_memory_for_reuse
from ndwork.datasets import synthetic_panel, us_employment
from ndwork.kernels import gemm
from ndwork.kernels.precision import BF16, FP16, to_low
from ndwork.models import MLP, NHITS, VanillaTransformer
from ndwork.training import trainer

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
# (m, k, n) of the dense layers at 1,024 windows a step: MLP (input 96, hidden 1024,
# h 24), NHITS (hidden 512), a transformer's projections (hidden 128 over 1,024 x 24 tokens)
SHAPES = [(1024, 96, 1024), (1024, 1024, 1024), (1024, 1024, 24), (1024, 24, 512),
          (1024, 512, 512), (1024, 512, 36), (24576, 128, 128)]
MODELS = {"MLP": (MLP, {}), "NHITS": (NHITS, {}),
          "VanillaTransformer": (VanillaTransformer, {})}
# a transformer step at NeuralForecast's defaults takes ~40x an MLP step here
STEP_FRACTION = {"VanillaTransformer": 0.1}


def _median_seconds(fn, repeat: int) -> float:
    return latencies(fn, repeat)["median_s"]


def gemms(repeat: int) -> list[dict]:
    """GFLOP/s of each shape: float32 (the BLAS ndwork dispatches to), each low precision
    natively (where it is) and as float32 on widened low-precision operands."""
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        flops = 2 * m * k * n / 1e9
        row = {"shape": f"{m}x{k}x{n}", "fp32 GFLOP/s": flops / _median_seconds(
            functools.partial(gemm.matmul, a, b), repeat)}
        for name, dtype in (("bf16", BF16), ("fp16", FP16)):
            al, bl = to_low(a, dtype), to_low(b, dtype)
            row[f"{name} storage, fp32 GEMM"] = flops / _median_seconds(
                functools.partial(gemm.low_matmul, al, b), repeat)  # activations low only
            if gemm._native_reason(dtype, None) is None:
                row[f"{name} native GFLOP/s"] = flops / _median_seconds(
                    functools.partial(gemm.onednn_matmul, al, bl), repeat)
                row[f"{name} / fp32"] = row[f"{name} native GFLOP/s"] / row["fp32 GFLOP/s"]
            if "mkl" in available_blas():  # a candidate, measured: oneMKL's own
                row[f"{name} MKL GFLOP/s"] = flops / _median_seconds(
                    functools.partial(gemm.mkl_matmul, al, bl), repeat)
        rows.append(row)
    return rows


def _model(name: str, steps: int, seed: int = 1, **extra):
    cls, kwargs = MODELS[name]
    return cls(**{"h": 24, "input_size": 96, "max_steps": steps, "random_seed": seed,
                  "scaler_type": "standard", "enable_progress_bar": False, **kwargs, **extra})


def fits(steps: int, repeat: int) -> list[dict]:
    """Steps/s per precision, best of `repeat` rounds that alternate the precisions (a
    burst of load on a shared machine then hits each of them)."""
    df = synthetic_panel(128, 600, seed=0)
    rows = []
    all_steps = steps
    for name in MODELS:
        steps = max(2, int(all_steps * STEP_FRACTION.get(name, 1)))
        best = dict.fromkeys(PRECISIONS, np.inf)
        for _ in range(repeat):
            for precision in PRECISIONS:
                with ndwork.optimizations(precision=precision):
                    NeuralForecast([_model(name, 2)], "D").fit(df)  # warm (kernels, choices)
                    nf = NeuralForecast([_model(name, steps)], "D")
                    start = time.perf_counter()
                    nf.fit(df)
                    best[precision] = min(best[precision], time.perf_counter() - start)
        row = {"model": name, "steps": steps}
        for precision in PRECISIONS:
            row[f"{precision} steps/s"] = steps / best[precision]
            if precision != "fp32":
                row[f"{precision} / fp32"] = best["fp32"] / best[precision]
        rows.append(row)
    return rows


def accuracy(steps: int, seeds: int) -> list[dict]:
    """Forecast MAE on a public panel (U.S. employment: 22 series of 120 months, the last
    12 held out; h=12, input 48), mean over seeds, per precision."""
    df = us_employment()
    test = df.groupby("unique_id").tail(12)
    train = df.drop(test.index)
    rows = []
    for name in ("MLP", "NHITS"):
        row = {"model": name, "steps": steps, "seeds": seeds}
        for precision in PRECISIONS:
            maes = []
            for seed in range(seeds):
                with ndwork.optimizations(precision=precision):
                    model = _model(name, steps, seed, h=12, input_size=48)
                    nf = NeuralForecast([model], "MS").fit(train)
                    fc = nf.predict()
                merged = test.merge(fc, on=["unique_id", "ds"])
                maes.append(float(np.abs(merged["y"] - merged[name]).mean()))
            row[f"{precision} MAE"] = float(np.mean(maes))
            row[f"{precision} MAE by seed"] = [round(m, 2) for m in maes]
            if precision != "fp32":
                row[f"{precision} MAE / fp32"] = row[f"{precision} MAE"] / row["fp32 MAE"]
        rows.append(row)
    return rows


def memory() -> list[dict]:
    """Bytes a step's graph holds for the backward, and the step's peak, over what existed
    before it (weights, optimizer state), at 1,024 windows; plus those fixed bytes."""
    df = synthetic_panel(128, 600, seed=0)
    rows = []
    for name in ("MLP", "NHITS"):
        nf = NeuralForecast([_model(name, 1)], "D").fit(df)
        model, state = nf.models[0], nf.states[0]
        windows = np.stack([np.arange(1024) % 400, np.arange(1024) % 128], axis=1)
        batch = trainer.make_batch(model, nf.panel, windows)
        fixed = state.params.nbytes * (2 + len(state.optimizer.buffers))  # + gradient
        row = {"model": name, "weights+grad+optimizer MB": fixed / 1e6}
        for precision in ("fp32", "bf16", "fp16"):
            with ndwork.optimizations(precision=precision):
                step(model, state.params, batch)  # warm
                held, peak = step(model, state.params, batch)
            row[f"{precision} held MB"] = held / 1e6
            row[f"{precision} peak MB"] = (peak + fixed) / 1e6
        for precision in ("bf16", "fp16"):
            row[f"{precision} held / fp32"] = row[f"{precision} held MB"] / row["fp32 held MB"]
            row[f"{precision} peak / fp32"] = row[f"{precision} peak MB"] / row["fp32 peak MB"]
        rows.append(row)
    return rows


def step(model, params, batch) -> tuple[int, int]:
    """(bytes the graph holds after the forward, the step's peak) over what existed before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out, _ = trainer.forward(model, params, batch, None)
        loss = model.loss(out, batch)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.reset_peak()
        trainer.backward(loss)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return held, peak


def predictions(calls: int) -> list[dict]:
    """nf.predict() of one series, median latency per precision."""
    df = synthetic_panel(1, 600, seed=0)
    rows = []
    for name in ("MLP", "NHITS"):
        nf = NeuralForecast([_model(name, 5)], "D").fit(df)
        row = {"model": name}
        for precision in ("fp32", "bf16"):
            with ndwork.optimizations(precision=precision):
                row[f"{precision} predict ms"] = latencies(nf.predict, calls)["median_s"] * 1e3
        row["bf16 / fp32 speed"] = row["fp32 predict ms"] / row["bf16 predict ms"]
        rows.append(row)
    return rows


def run(quick: bool = False, steps: int | None = None, repeat: int | None = None,
        seeds: int | None = None, accuracy_steps: int | None = None) -> dict:
    """quick: the smallest sizes (tests); else `steps` per fit (60), the best of `repeat`
    alternating rounds (3), and MAE over `seeds` fits of `accuracy_steps` steps (300; 5
    seeds: one seed's MAE on this panel varies by +-20%)."""
    steps = steps or (5 if quick else 60)
    repeat = repeat or (1 if quick else 3)
    seeds = seeds or (1 if quick else 5)
    keep_freed_memory_for_reuse()  # as training does: fresh arrays then cost no page faults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gemm.PrecisionFallbackWarning)
        results = {
            "gemm": gemms(3 if quick else 9),
            "fit": fits(steps, repeat),
            "accuracy": accuracy(5 if quick else accuracy_steps or 300, seeds),
            "memory": memory(),
            "predict": predictions(20 if quick else 200),
        }
    native = {name: gemm._native_reason(dtype, None) or "native"
              for name, dtype in (("bf16", BF16), ("fp16", FP16))}
    return {**results, "cpu": cpu(), "native": native,
            "auto_choices": gemm.precision_choices()}


def render(results: dict) -> str:
    def columns(rows):
        return list(dict.fromkeys(k for r in rows for k in r if not k.endswith("by seed")))

    parts = [f"CPU {results['cpu']['model']} {results['cpu']['isa']}; low-precision GEMMs: "
             f"{results['native']}"]
    for section in ("gemm", "fit", "accuracy", "memory", "predict"):
        rows = results[section]
        parts.append(f"\n{section}\n" + table(rows, columns(rows)))
    parts.append(f"\nauto picked: {results['auto_choices']}")
    return "\n".join(parts)
