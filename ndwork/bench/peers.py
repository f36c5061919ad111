"""Peer suite: the same configurations trained in ndwork and in NeuralForecast, on the
same data and threads, in one run; ratios of fit time, predict latency and MAE.

Needs the `peers` extra (neuralforecast, torch); `make peers` builds that environment.
NeuralForecast runs in a process of its own (spawned once for the run).
NeuralForecast runs with accelerator='cpu', logger=False, enable_progress_bar=False,
enable_checkpointing=False; the default MLP and NHITS also train in bf16 on both sides
(ndwork's precision="bf16", NeuralForecast's precision='bf16-mixed').
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

import ndwork
from ndwork.bench.common import latencies, table
from ndwork.datasets import air_passengers, synthetic_panel, us_employment

THREADS = 2
# the datasets: (frame, freq, h, input_size); the panel is the recurrent issue's
# "128-series panel (h=24, input 96)"
DATASETS = {"air": (air_passengers, "MS", 12, 24),
            "synthetic": (lambda: synthetic_panel(64, 600, seed=0), "D", 12, 24),
            "panel128": (lambda: synthetic_panel(128, 600, seed=0), "D", 24, 96),
            # the multivariate issue's: a 7-series aligned panel (h=24, input 96) for
            # speed, a public aligned panel (22 series of 120 months) for accuracy
            "panel7": (lambda: synthetic_panel(7, 600, seed=0), "D", 24, 96),
            "employment": (us_employment, "MS", 12, 24)}
FREQUENCY_STEPS = {"Autoformer": 40, "FEDformer": 40, "TimesNet": 40, "TimeXer": 60, "TFT": 40}
# (name, model, hyper-parameters, dataset, steps): defaults at 1,024 windows a step are
# compute-bound; small networks at 64 windows on AirPassengers are overhead-bound.
CONFIGS = [
    ("MLP default", "MLP", {}, "synthetic", 100),
    ("NHITS default", "NHITS", {}, "synthetic", 60),
    ("NBEATS default", "NBEATS", {}, "synthetic", 60),
    ("MLP small", "MLP", dict(hidden_size=128, windows_batch_size=64), "air", 300),
    ("NHITS small", "NHITS", dict(mlp_units=3 * [[128, 128]], windows_batch_size=64), "air",
     300),
    ("NBEATS small", "NBEATS", dict(mlp_units=3 * [[128, 128]], windows_batch_size=64), "air",
     300),
    # the recurrent and convolutional models at NeuralForecast's defaults
    ("LSTM default", "LSTM", {}, "air", 100),
    ("GRU default", "GRU", {}, "air", 60),
    ("TCN default", "TCN", {}, "air", 200),
    ("RNN default", "RNN", {}, "air", 200),
    ("BiTCN default", "BiTCN", {}, "air", 100),
    ("DilatedRNN default", "DilatedRNN", {}, "air", 60),
    ("LSTM panel", "LSTM", {}, "panel128", 30),
    ("GRU panel", "GRU", {}, "panel128", 20),
    ("TCN panel", "TCN", {}, "panel128", 60),
    ("DilatedRNN panel", "DilatedRNN", {}, "panel128", 20),
    ("BiTCN panel", "BiTCN", {}, "panel128", 30),
    ("LSTM recurrent", "LSTM", dict(recurrent=True), "air", 100),
    ("GRU recurrent", "GRU", dict(recurrent=True), "air", 60),
    # NeuralForecast's xLSTM needs the xlstm package (make peers installs it)
    ("xLSTM default", "xLSTM", {}, "air", 30),
    # the probabilistic models at NeuralForecast's defaults (DeepAR: StudentT, 100 paths)
    ("DeepAR default", "DeepAR", {}, "air", 60),
    ("DeepNPTS default", "DeepNPTS", {}, "air", 200),
    # the multivariate models at NeuralForecast's defaults: speed on 7 aligned series,
    # accuracy on a public panel of 22 (and KAN, univariate, beside them)
    *[(f"{m} panel7", m, {}, "panel7", 100) for m in ("TSMixer", "TSMixerx", "MLPMultivariate",
                                                      "TimeMixer", "SOFTS", "RMoK")],
    *[(f"{m} employment", m, {}, "employment", 200)
      for m in ("TSMixer", "TSMixerx", "MLPMultivariate", "TimeMixer", "SOFTS", "SOFTSSharp",
                "RMoK", "XLinear", "StemGNN", "KAN")],
    # the frequency-domain and gated-attention models at NeuralForecast's defaults:
    # speed on AirPassengers and on the 128-series panel, accuracy on the public panel
    *[(f"{m} default", m, {}, "air", steps) for m, steps in FREQUENCY_STEPS.items()],
    *[(f"{m} panel", m, {}, "panel128", max(10, steps // 4))
      for m, steps in FREQUENCY_STEPS.items()],
    *[(f"{m} employment", m, {}, "employment", 100) for m in FREQUENCY_STEPS],
]
# trained in bf16 too: ndwork's precision="bf16" against NeuralForecast's "bf16-mixed"
BF16_CONFIGS = ("MLP default", "NHITS default")
NF_TRAINER = dict(accelerator="cpu", logger=False, enable_progress_bar=False,
                  enable_checkpointing=False, enable_model_summary=False)


def _split(name: str):
    """(train, test, freq, h, input_size): the last h points of each series are the test."""
    load, freq, h, input_size = DATASETS[name]
    df = load().astype({"y": np.float64})
    tail = df.groupby("unique_id").cumcount(ascending=False) < h
    return df[~tail].reset_index(drop=True), df[tail].reset_index(drop=True), freq, h, input_size


def _mae(fcst, test, column) -> float:
    merged = test.merge(fcst, on=["unique_id", "ds"])
    return float(np.abs(merged[column] - merged["y"]).mean())


def _multivariate(model_name: str, train) -> dict:
    """n_series for a multivariate model (the same flag on both sides)."""
    from ndwork.models import MODELS

    return {"n_series": train.unique_id.nunique()} if MODELS[model_name].MULTIVARIATE else {}


def _fit_ndwork(model_name, kwargs, steps, train, freq, h, input_size, seed=1):
    from ndwork import NeuralForecast
    from ndwork.models import MODELS

    model = MODELS[model_name](h=h, input_size=input_size, max_steps=steps, scaler_type="standard",
                               random_seed=seed, **kwargs, **_multivariate(model_name, train))
    nf = NeuralForecast([model], freq)
    start = time.perf_counter()
    nf.fit(train, verbose=False)
    return nf, time.perf_counter() - start


def _fit_neuralforecast(model_name, kwargs, steps, train, freq, h, input_size, seed=1, **trainer):
    import neuralforecast
    import neuralforecast.models

    cls = getattr(neuralforecast.models, model_name)
    model = cls(h=h, input_size=input_size, max_steps=steps, scaler_type="standard",
                random_seed=seed, **kwargs, **_multivariate(model_name, train),
                **{**NF_TRAINER, **trainer})
    nf = neuralforecast.NeuralForecast(models=[model], freq=freq)
    start = time.perf_counter()
    nf.fit(train)
    return nf, time.perf_counter() - start


def _measure(fit, model_name, kwargs, steps, data, repeat):
    """Fit `repeat` times with seeds 1..repeat: median fit time, mean MAE over the seeds
    (one seed's MAE on a small dataset is mostly noise)."""
    train, test, freq, h, input_size = _split(data)
    fit(model_name, kwargs, 5, train, freq, h, input_size)  # warm-up: imports, caches, pools
    times, maes = [], []
    for seed in range(1, repeat + 1):
        nf, seconds = fit(model_name, kwargs, steps, train, freq, h, input_size, seed)
        times.append(seconds)
        maes.append(_mae(nf.predict(), test, model_name))
        time.sleep(0.3)  # let BLAS and OpenMP threads that spin after work go idle
    mae = statistics.mean(maes)
    if not _multivariate(model_name, train):  # latency of one series' forecast
        train = train[train.unique_id == train.unique_id[0]]
    one = fit(model_name, kwargs, 5, train, freq, h, input_size)[0]  # (a multivariate: all)
    lat = latencies(one.predict, calls=100)
    return {"fit_s": statistics.median(times), "steps_per_s": steps / statistics.median(times),
            "mae": mae, "predict_ms": lat["median_s"] * 1e3, "predict_p99_ms": lat["p99_s"] * 1e3}


def _quiet_torch() -> None:
    """torch on THREADS threads, Lightning's logs and warnings off."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
                 "lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "lightning_fabric.utilities.seed",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)


def _measure_peer(model_name, kwargs, steps, data, repeat, trainer):
    """_measure of NeuralForecast, run in the peer's own process (see run)."""
    _quiet_torch()
    return _measure(functools.partial(_fit_neuralforecast, **trainer), model_name, kwargs, steps,
                    data, repeat)


# TFT's training memory on long inputs, each library in a fresh process: the growth of
# peak RSS over one short fit (after a warm-up fit, so imports and compiled code are in)
MEMORY_NAME = "TFT memory"
MEMORY_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    side, input_size, windows, steps = sys.argv[1], *map(int, sys.argv[2:5])
    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
    t = np.arange(input_size + 12 + windows)
    df = pd.DataFrame({"unique_id": "s", "ds": t,
                       "y": (np.sin(t / 50) + 0.01 * t).astype(np.float32)})
    options = dict(h=12, windows_batch_size=windows, scaler_type="standard")
    if side == "ndwork":
        import ndwork
        from ndwork import NeuralForecast
        from ndwork.models import TFT
        def fit(size, steps):
            with ndwork.optimizations(threads=2):
                NeuralForecast([TFT(input_size=size, max_steps=steps, enable_progress_bar=False,
                                    **options)], freq=1).fit(df)
    else:
        import logging, warnings
        import torch
        warnings.filterwarnings("ignore")
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        torch.set_num_threads(2)
        from neuralforecast import NeuralForecast
        from neuralforecast.models import TFT
        def fit(size, steps):
            NeuralForecast([TFT(input_size=size, max_steps=steps, accelerator="cpu",
                                logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, enable_model_summary=False,
                                **options)], freq=1).fit(df)
    fit(32, 1)
    open("/proc/self/clear_refs", "w").write("5")
    before = rss("VmRSS:")
    start = time.perf_counter()
    fit(input_size, steps)
    print(rss("VmHWM:") - before, time.perf_counter() - start)
""")


def long_input_memory(input_size: int = 2048, windows: int = 64, steps: int = 2) -> list[dict]:
    """TFT training at `input_size` with `windows` windows a step, ndwork and
    NeuralForecast, each in a fresh process: peak memory growth and time."""
    rows = []
    for side in ("ndwork", "NeuralForecast"):
        result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, side, str(input_size),
                                 str(windows), str(steps)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{side}: {result.stderr[-2000:]}")
        peak, seconds = result.stdout.split()[-2:]
        rows.append({"library": side, "input_size": input_size, "windows": windows,
                     "steps": steps, "peak GiB": int(peak) / 2**30, "seconds": float(seconds)})
    rows[0]["ndwork / NF peak"] = rows[0]["peak GiB"] / rows[1]["peak GiB"]
    return rows


def run(quick: bool = False, only: str | None = None, skip: str | None = None) -> dict:
    """NeuralForecast runs in a process of its own, as its users run it: no state of one
    library (ndwork's allocator settings, torch's thread pools) reaches the other.
    only / skip: run only / leave out the configurations whose name contains it."""
    try:
        import torch
    except ImportError as e:
        raise SystemExit("the peers suite needs the `peers` extra (neuralforecast, torch): "
                         "run `make peers`.") from e
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    repeat = 1 if quick else 3
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as peer_process:
        def peer(model_name, kwargs, steps, data, **trainer):
            return peer_process.submit(_measure_peer, model_name, kwargs, steps, data, repeat,
                                       trainer).result()

        for name, model_name, kwargs, data, steps in CONFIGS:
            if (only and only not in name) or (skip and skip in name):
                continue
            steps = max(10, steps // 10) if quick else steps
            with ndwork.optimizations(threads=THREADS):
                ours = _measure(_fit_ndwork, model_name, kwargs, steps, data, repeat)
            try:
                theirs = peer(model_name, kwargs, steps, data)
            except Exception as e:  # e.g. NeuralForecast's xLSTM without the xlstm package
                rows.append({"config": name, "steps": steps,
                             "ndwork steps/s": ours["steps_per_s"], "ndwork MAE": ours["mae"],
                             "ndwork predict ms": ours["predict_ms"],
                             "NF fails": f"{type(e).__name__}: {e}"[:80]})
                continue
            row = {"config": name, "steps": steps,
                   "ndwork steps/s": ours["steps_per_s"], "NF steps/s": theirs["steps_per_s"],
                   "fit speed-up": theirs["fit_s"] / ours["fit_s"],
                   "ndwork MAE": ours["mae"], "NF MAE": theirs["mae"],
                   "MAE ratio": ours["mae"] / theirs["mae"],
                   "ndwork predict ms": ours["predict_ms"], "NF predict ms": theirs["predict_ms"],
                   "predict speed-up": theirs["predict_ms"] / ours["predict_ms"]}
            if name in BF16_CONFIGS:  # mixed precision on both sides
                bf16 = peer(model_name, kwargs, steps, data, precision="bf16-mixed")
                with ndwork.optimizations(threads=THREADS, precision="bf16"):
                    ours_bf16 = _measure(_fit_ndwork, model_name, kwargs, steps, data, repeat)
                row.update({"ndwork bf16 steps/s": ours_bf16["steps_per_s"],
                            "NF bf16 steps/s": bf16["steps_per_s"],
                            "bf16 vs NF bf16": bf16["fit_s"] / ours_bf16["fit_s"],
                            "ndwork bf16 vs fp32": ours["fit_s"] / ours_bf16["fit_s"],
                            "ndwork bf16 MAE": ours_bf16["mae"], "NF bf16 MAE": bf16["mae"]})
            rows.append(row)
    memory = []
    if (not only or only in MEMORY_NAME) and not (skip and skip in MEMORY_NAME):
        memory = long_input_memory(*((512, 16, 1) if quick else ()))
    from threadpoolctl import threadpool_info

    from ndwork.config import cpu

    return {"rows": rows, "memory": memory, "threads": THREADS, "torch": torch.__version__, "cpu": cpu(),
            "numpy_blas_kernel": sorted({p["architecture"] for p in threadpool_info()
                                         if p.get("architecture")}),
            "neuralforecast": __import__("neuralforecast").__version__}


def render(results: dict) -> str:
    cols = ["config", "steps", "ndwork steps/s", "NF steps/s", "fit speed-up", "ndwork MAE",
            "NF MAE", "MAE ratio", "ndwork predict ms", "NF predict ms", "predict speed-up",
            "ndwork bf16 steps/s", "NF bf16 steps/s", "bf16 vs NF bf16", "ndwork bf16 vs fp32",
            "ndwork bf16 MAE", "NF bf16 MAE", "NF fails"]
    memory = results.get("memory") or []
    return (table(results["rows"], cols)
            + (f"\n\n{MEMORY_NAME} (peak RSS growth of a fit, fresh process each):\n"
               + table(memory, ["library", "input_size", "windows", "steps", "peak GiB",
                                "seconds", "ndwork / NF peak"]) if memory else "")
            + f"\n\nCPU {results.get('cpu', {}).get('model')} "
              f"{results.get('cpu', {}).get('isa')}; threads={results['threads']} torch "
              f"{results['torch']} "
              f"neuralforecast {results['neuralforecast']}; numpy BLAS kernel "
              f"{results['numpy_blas_kernel']}; MAE is the mean over the seeds of the repeats")
