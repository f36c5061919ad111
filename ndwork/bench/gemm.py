"""Where a training step's time goes: each GEMM of the dense models' training against
what the best available BLAS reaches at that shape alone, and the share of the step that
is not a GEMM.

A fit runs under `ndwork.profile()`, which times every GEMM the compiled kernels run
(`ndwork.kernels.gemm.matmul`) by shape: m x k x n, operand layouts (N: row-major,
T: a transposed view), threads. Each shape is then timed alone on fresh operands of the
same layout with every BLAS this machine has (best of repeats); "efficiency" is that
best alone time over the mean time in the step. The step's non-GEMM share is the fit's
wall time minus its GEMMs (the profiler's own measured overhead taken out), over the same.
"""

from __future__ import annotations

import time

import numpy as np

import ndwork
from ndwork import NeuralForecast
from ndwork.bench.common import gemm_peak, table
from ndwork.config import available_blas
from ndwork.datasets import synthetic_panel
from ndwork.kernels.gemm import CANDIDATES
from ndwork.models import MLP, NBEATS, NHITS

# NeuralForecast's defaults at 1,024 windows a step: the compute-bound configurations
CONFIGS = [("MLP", MLP, 12, 24), ("NHITS", NHITS, 12, 24), ("NBEATS", NBEATS, 12, 24),
           ("MLP", MLP, 24, 96), ("NHITS", NHITS, 24, 96)]


def _operands(label: str) -> tuple[np.ndarray, np.ndarray]:
    """Random operands of the shape and layouts a label names ("1024x96x512 NT threads=2")."""
    dims, layouts = label.split()[:2]
    m, k, n = (int(x) for x in dims.split("x"))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=(k, n)).astype(np.float32)
    if layouts[0] == "T":
        a = np.ascontiguousarray(a.T).T
    if layouts[1] == "T":
        b = np.ascontiguousarray(b.T).T
    return a, b


def alone(label: str, repeat: int = 7) -> tuple[float, str]:
    """(seconds, BLAS) of the fastest BLAS on this shape alone, best of `repeat`."""
    a, b = _operands(label)
    best = {}
    for name in available_blas()[1:]:
        fn = CANDIDATES[name]
        fn(a, b)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn(a, b)
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    name = min(best, key=best.get)
    return best[name], name


def where_the_time_goes(cls, h: int, input_size: int, steps: int) -> dict:
    df = synthetic_panel(128, 600, seed=0)
    NeuralForecast([cls(h=h, input_size=input_size, max_steps=3)], "D").fit(df, verbose=False)
    nf = NeuralForecast([cls(h=h, input_size=input_size, max_steps=steps)], "D")
    with ndwork.profile() as prof:
        nf.fit(df, verbose=False)
    wall = prof.wall_seconds - prof.overhead_seconds
    shapes = []
    for label, seconds in sorted(prof.gemm_seconds.items(), key=lambda kv: -kv[1]):
        calls = prof.gemm_calls[label]
        best, blas = alone(label)
        m, k, n = (int(x) for x in label.split()[0].split("x"))
        shapes.append({"shape": label, "calls": calls, "BLAS in steps": prof.gemm_blas[label],
                       "ms in steps": seconds * 1e3,
                       "ms a call": seconds / calls * 1e3, "ms alone": best * 1e3,
                       "best BLAS alone": blas, "efficiency": best / (seconds / calls),
                       "GFLOP/s in steps": 2 * m * k * n * calls / seconds / 1e9})
    gemm = sum(prof.gemm_seconds.values())
    return {"shapes": shapes, "fit_s": wall, "gemm_s": gemm, "non_gemm_share": 1 - gemm / wall,
            "gemm_share_at_85pct": sum(s["ms in steps"] for s in shapes
                                       if s["efficiency"] >= 0.85) / 1e3 / gemm}


def run(quick: bool = False) -> dict:
    peak = gemm_peak()
    models = []
    for name, cls, h, input_size in CONFIGS[:2] if quick else CONFIGS:
        result = where_the_time_goes(cls, h, input_size, 5 if quick else 30)
        gemm_flops = sum(s["GFLOP/s in steps"] * s["ms in steps"] / 1e3 for s in result["shapes"])
        models.append({"model": f"{name} h={h} input={input_size}", **result,
                       "gemm_pct_of_peak": 100 * gemm_flops / result["gemm_s"] / peak})
    return {"models": models, "gemm_peak_gflops": peak, "blas": list(available_blas()),
            "note": "efficiency = the best available BLAS on the shape alone / its mean time "
                    "in the steps; non-GEMM share = 1 - GEMM time / fit time (profiler "
                    "overhead taken out)"}


def render(results: dict) -> str:
    lines = []
    for m in results["models"]:
        lines.append(f"\n{m['model']}: fit {m['fit_s']:.2f} s, GEMMs {m['gemm_s']:.2f} s, "
                     f"not GEMM {100 * m['non_gemm_share']:.0f}% of the fit; GEMMs at "
                     f"{m['gemm_pct_of_peak']:.0f}% of the {results['gemm_peak_gflops']:.0f} "
                     f"GFLOP/s peak; {100 * m['gemm_share_at_85pct']:.0f}% of GEMM time in "
                     f"shapes at >= 85% of their best BLAS alone")
        lines.append(table(m["shapes"], ["shape", "calls", "BLAS in steps", "ms a call",
                                         "ms alone", "best BLAS alone", "efficiency",
                                         "GFLOP/s in steps"]))
    return "\n".join(lines) + f"\n\nBLAS here: {results['blas']}; {results['note']}"
