"""Timing, machine facts and output shared by the benchmark suites.

Machines are shared and noisy: every figure is a median over repeats, and every
comparison is a ratio of two figures measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ndwork.config import cpu  # noqa: F401  (the benchmarks record it)


def timeit(fn: Callable[[], object], repeat: int = 7, min_time: float = 0.05) -> dict:
    """Median and p99 seconds per call; each sample loops until it lasts min_time."""
    fn()  # warm-up (compilation, caches)
    loops, start = 1, time.perf_counter()
    fn()
    once = time.perf_counter() - start
    if once < min_time:
        loops = max(1, int(min_time / max(once, 1e-9)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return {"median_s": statistics.median(samples), "p99_s": float(np.percentile(samples, 99)),
            "repeat": repeat, "loops": loops}


def latencies(fn: Callable[[], object], calls: int = 200) -> dict:
    """Median and p99 of single calls (latency, not throughput)."""
    fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "p99_s": float(np.percentile(samples, 99)),
            "calls": calls}


def gemm_peak(n: int = 2048, repeat: int = 7) -> float:
    """float32 GEMM GFLOP/s of numpy's BLAS at n x n, threads as configured now."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    t = timeit(lambda: a @ b, repeat=repeat, min_time=0.2)
    return 2 * n**3 / t["median_s"] / 1e9


def machine() -> dict:
    import numba
    from threadpoolctl import threadpool_info

    import ndwork
    from ndwork.config import threading_layer

    return {"platform": platform.platform(), "processor": platform.machine(), "cpu": cpu(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "ndwork": ndwork.__version__,
            "numba_threading_layer": threading_layer(),
            "blas": [{"library": os.path.basename(p["filepath"]),
                      **{k: p.get(k) for k in ("internal_api", "num_threads", "architecture")}}
                     for p in threadpool_info()],
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write(suite: str, results: dict, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{suite}.json"
    path.write_text(json.dumps({"suite": suite, "machine": machine(), **results}, indent=1,
                               default=float))
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table of rows (dicts) with the given columns."""
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
