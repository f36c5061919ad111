"""Parallel suite: scaling from 1 to 2 threads and 1 to 2 dask workers for batch
inference, cross-validation, grid search and data-parallel training; measured
overheads; and a model of the scaling past this machine.

Each comparison runs both sides in the same process and run; efficiency is
speed-up / workers.
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np

import ndwork
from ndwork import NeuralForecast
from ndwork.bench.common import table
from ndwork.datasets import synthetic_panel
from ndwork.models import MLP, NHITS
from ndwork.tuning import ensemble, grid_search

NETWORK_BYTES_PER_S = 10e9 / 8  # the 10 Gb/s network of the scaling model
NETWORK_LATENCY_S = 50e-6


def _seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _workloads(quick: bool):
    """Work items of a second or more each, so that the per-task overhead (about 10 ms
    a dask task here) is small beside them, as in real cross-validation and search."""
    panel = synthetic_panel(64 if quick else 128, 300, seed=0)
    many = synthetic_panel(500 if quick else 20_000, 60, seed=1)
    small = dict(h=12, input_size=24, hidden_size=256, windows_batch_size=256,
                 scaler_type="standard", max_steps=20 if quick else 500)
    # NeuralForecast's default NHITS: about 25 microseconds of compute a series (the
    # small MLP's whole 20,000-series forecast takes 0.1 s: less than dask's round trips)
    fitted = NeuralForecast([NHITS(h=12, input_size=24, max_steps=5)], "D").fit(
        panel, verbose=False)
    grid = {"hidden_size": [128, 256], "learning_rate": [1e-3, 3e-3]}
    return {
        "batch inference (NHITS)": lambda p: fitted.predict(df=many, parallel=p),
        "cross-validation (refit)": lambda p: NeuralForecast([MLP(**small)], "D")
        .cross_validation(panel, n_windows=4, step_size=12, refit=True, verbose=False,
                          parallel=p),
        "grid search": lambda p: grid_search(MLP, grid, panel, "D", h=12, input_size=24,
                                             max_steps=small["max_steps"],
                                             windows_batch_size=256, parallel=p),
        "ensemble (4 seeds)": lambda p: ensemble(
            [MLP(**small, random_seed=s, alias=f"MLP{s}") for s in range(4)], panel, "D",
            level=[80], parallel=p),
    }


def _scaling(quick: bool) -> list[dict]:
    from ndwork.distributed import connect

    rows = []
    repeat = 1 if quick else 3
    work = _workloads(quick)
    with connect(1) as one, connect(2) as two, warnings.catch_warnings():
        # measuring threads for training work is the point here: no advice wanted
        warnings.filterwarnings("ignore", message="parallel='threads' for training work")
        for name, fn in work.items():
            for label, base, par in (("threads", None, "threads"), ("dask", one, two)):
                with ndwork.optimizations(threads=1):
                    fn(base), fn(par)  # warm-up: kernels, worker imports
                    t1 = _seconds(lambda fn=fn, base=base: fn(base), repeat)
                    t2 = _seconds(lambda fn=fn, par=par: fn(par), repeat)
                rows.append({"work": name, "on": label, "1 worker s": t1, "2 workers s": t2,
                             "speed-up": t1 / t2, "efficiency %": 100 * t1 / t2 / 2})
    return rows


def _overheads(client, params_size: int) -> dict:
    def noop():
        return None

    client.submit(noop, pure=False).result()
    round_trip = _seconds(lambda: client.submit(noop, pure=False).result(), 20)
    params = np.zeros(params_size, np.float32)
    transfer = _seconds(lambda: client.gather(client.scatter(params)), 5)
    return {"task round trip ms": round_trip * 1e3,
            "parameter scatter+gather ms": transfer * 1e3,
            "parameter bytes": params.nbytes}


def _training(quick: bool) -> dict:
    """NHITS at 1,024 windows a step: one single-threaded process against two
    single-threaded dask workers at several sync_every."""
    from ndwork.distributed import connect

    panel = synthetic_panel(64, 500, seed=1)
    steps = 16 if quick else 256  # enough that start-up (shipping, warm-up) is amortized
    cfg = dict(h=12, input_size=24, windows_batch_size=1024, scaler_type="standard",
               max_steps=steps, val_check_steps=steps)

    def fit(**kwargs):
        nf = NeuralForecast([NHITS(**cfg)], "D")
        start = time.perf_counter()
        nf.fit(panel, val_size=12, verbose=False, **kwargs)
        return time.perf_counter() - start, nf.states[0].valid_losses[-1][1], nf.bytes_per_sync

    with ndwork.optimizations(threads=1):
        fit()  # warm-up
        alone_s, alone_valid, _ = fit()
    with ndwork.optimizations(threads=2):
        two_threads_s, two_threads_valid, _ = fit()
    rows = [{"setup": "1 process, 1 thread", "steps/s": steps / alone_s,
             "valid loss": alone_valid, "vs 1 process": 1.0},
            {"setup": "1 process, 2 threads (BLAS)", "steps/s": steps / two_threads_s,
             "valid loss": two_threads_valid, "vs 1 process": alone_s / two_threads_s,
             "valid vs 1 process %": 100 * (two_threads_valid / alone_valid - 1)}]
    with connect(2) as client:
        overheads = _overheads(client, NHITS(**cfg).num_parameters())
        bytes_per_sync = {}
        for k in ([1, 8] if quick else [1, 4, 16, 32, 64]):
            seconds, valid, moved = fit(distributed=client, sync_every=k)
            rows.append({"setup": f"2 workers, sync_every={k}", "steps/s": steps / seconds,
                         "valid loss": valid, "vs 1 process": alone_s / seconds,
                         "valid vs 1 process %": 100 * (valid / alone_valid - 1)})
            bytes_per_sync[k] = moved  # per worker and round, both ways
    compute_step_s = alone_s / steps
    return {"rows": rows, "overheads": overheads, "compute_step_s": compute_step_s,
            "bytes_per_sync_per_worker": bytes_per_sync,
            "model": _scaling_model(compute_step_s, NHITS(**cfg).num_parameters() * 4,
                                    overheads["task round trip ms"] / 1e3)}


def _scaling_model(compute_step_s: float, param_bytes: int, round_trip_s: float) -> list[dict]:
    """Predicted windows/s for N workers on a 10 Gb/s network: each step's global batch
    of 1,024 windows split N ways, and every K steps one synchronization plus one task
    round trip.

    The model is of what the code does: the driver sends the parameters to each of the
    N ranks and gathers each rank's gradient (K=1) or parameters (K>1) back, so its link
    carries 2 N parameter copies per round. A ring all-reduce, which ndwork does not
    implement, would carry 2 (N - 1) / N copies per link: listed as a projection only."""
    syncs = {
        "": lambda n: 2 * n * param_bytes / NETWORK_BYTES_PER_S,  # driver gather
        " (projection: ring all-reduce)": lambda n: (2 * (n - 1) / n * param_bytes
                                                     / NETWORK_BYTES_PER_S
                                                     + 2 * (n - 1) * NETWORK_LATENCY_S),
    }
    rows = []
    for n in (4, 8, 16, 32, 64):
        row = {"workers": n}
        for label, transfer in syncs.items():
            for k in (1, 16, 64):
                seconds_per_round = k * compute_step_s / n + transfer(n) + round_trip_s
                row[f"windows/s K={k}{label}"] = 1024 * k / seconds_per_round
        rows.append(row)
    return rows


def run(quick: bool = False) -> dict:
    return {"scaling": _scaling(quick), "training": _training(quick)}


def render(results: dict) -> str:
    train = results["training"]
    lines = [table(results["scaling"], ["work", "on", "1 worker s", "2 workers s", "speed-up",
                                        "efficiency %"]),
             "\nData-parallel NHITS (1,024 windows a step):",
             table(train["rows"], ["setup", "steps/s", "vs 1 process", "valid loss",
                                   "valid vs 1 process %"]),
             f"\noverheads: {train['overheads']}",
             f"bytes per synchronization per worker: {train['bytes_per_sync_per_worker']} "
             f"(parameters: {train['overheads']['parameter bytes']})",
             f"\nscaling model (10 Gb/s, measured step {train['compute_step_s'] * 1e3:.0f} ms; "
             f"the driver gathers every rank, as the code does):",
             table(train["model"], ["workers", "windows/s K=1", "windows/s K=16",
                                    "windows/s K=64"]),
             "\nprojection only, not implemented: the same with a ring all-reduce",
             table(train["model"], ["workers"] + [f"windows/s K={k} (projection: ring "
                                                  f"all-reduce)" for k in (1, 16, 64)])]
    return "\n".join(lines)
