"""Start-up suite: a fresh process that imports ndwork, fits a tiny model for two steps
and predicts, once with an empty numba cache (cold: every kernel compiles) and then
with the cache that run left (warm)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from ndwork.bench.common import table

SCRIPT = """
import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers
from ndwork.models import NHITS
with ndwork.optimizations(kernels="numba"):
    nf = NeuralForecast([NHITS(h=12, input_size=24, max_steps=2, mlp_units=[[8, 8]])], "MS")
    nf.fit(air_passengers(), verbose=False).predict()
"""


def _run(cache_dir: str) -> float:
    # NUMBA_CACHE_DIR only for the child: the benchmark chooses where its cache lives
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    repeat = 1 if quick else 3
    cold, warm = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(_run(cache))
            warm.append(_run(cache))
    rows = [{"start": "cold (empty numba cache)", "seconds": statistics.median(cold)},
            {"start": "warm (cached kernels)", "seconds": statistics.median(warm)}]
    return {"rows": rows, "cold_s": cold, "warm_s": warm}


def render(results: dict) -> str:
    return table(results["rows"], ["start", "seconds"])
