"""Recurrent suite (the seed's recurrent benchmark): the sequence kernels and the
recurrent and convolutional models, compiled against the numpy reference in one run.

- kernels: one LSTM / GRU / RNN layer forward+backward through time over sequence
  lengths 24 to 1,024 and hidden sizes 64 to 512 (32 windows): milliseconds, GFLOP/s of
  its GEMMs, and peak memory beyond the inputs;
- models: fit steps/s and predict latency of RNN, LSTM, GRU, TCN, BiTCN, DilatedRNN and
  xLSTM (both backbones; NeuralForecast's xLSTM needs the xlstm package, so ndwork's own
  LSTM is its reference here) at NeuralForecast's defaults, and LSTM with recurrent=True,
  on AirPassengers (h=12, input 24) and a 128-series panel (h=24, input 96);
- memory: an LSTM layer's backward through time at sequence 1,024, hidden 256 and 128
  windows, peak memory against the activations it must keep (h, c and the four gates).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np

import ndwork
from ndwork import NeuralForecast
from ndwork.autodiff import Tensor, backward, ops
from ndwork.bench.common import latencies, table, timeit
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.models import GRU, LSTM, RNN, TCN, BiTCN, DilatedRNN, xLSTM

GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}
SHAPES = [(24, 64), (24, 128), (96, 128), (96, 256), (96, 512), (384, 128), (1024, 64),
          (1024, 256)]
QUICK_SHAPES = [(24, 64), (96, 128)]
AIR = "AirPassengers (h=12, input 24)"
# (label, class, options, on the panel too): xLSTM on AirPassengers only, where it is
# compared with LSTM; its numpy reference path at input 96 would add minutes to the report
MODELS = [("RNN", RNN, {}, True), ("LSTM", LSTM, {}, True), ("GRU", GRU, {}, True),
          ("TCN", TCN, {}, True), ("BiTCN", BiTCN, {}, True), ("DilatedRNN", DilatedRNN, {}, True),
          ("LSTM recurrent", LSTM, {"recurrent": True}, True), ("xLSTM mLSTM", xLSTM, {}, False),
          ("xLSTM sLSTM", xLSTM, {"backbone": "sLSTM"}, False)]


def _layer(cell: str, t: int, hidden: int, windows: int = 32, inputs: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = GATES[cell] * hidden
    bound = 1 / np.sqrt(hidden)
    arrays = [rng.normal(size=(t, windows, inputs)), rng.uniform(-bound, bound, (inputs, g)),
              rng.uniform(-bound, bound, (hidden, g)), rng.uniform(-bound, bound, g),
              rng.uniform(-bound, bound, g)]
    return [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]


def _forward_backward(cell, tensors):
    out = ops.recurrent(*tensors, cell)
    backward(out, np.ones_like(out.data))


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def kernels(quick: bool) -> list[dict]:
    rows = []
    for t, hidden in QUICK_SHAPES if quick else SHAPES:
        for cell in GATES:
            tensors = _layer(cell, t, hidden)
            # GEMM work: the hidden-to-hidden product per step, forward and twice backward
            flops = 3 * 2 * 32 * t * hidden * GATES[cell] * hidden
            row = {"cell": cell, "T": t, "H": hidden}
            for kernels_path in ("numba", "numpy"):
                with ndwork.optimizations(kernels=kernels_path):
                    m = timeit(lambda tensors=tensors, cell=cell: _forward_backward(cell, tensors),
                               repeat=3 if quick else 5, min_time=0.05)
                row[f"{kernels_path} ms"] = m["median_s"] * 1e3
                row[f"{kernels_path} GFLOP/s"] = flops / m["median_s"] / 1e9
            row["numba/numpy"] = row["numpy ms"] / row["numba ms"]
            row["peak MiB"] = _peak_bytes(lambda tensors=tensors, cell=cell: _forward_backward(
                cell, tensors)) / 2**20
            rows.append(row)
    return rows


def _datasets(quick: bool):
    panel = synthetic_panel(128, 400 if quick else 800, seed=0)
    return {AIR: (air_passengers(), "MS", 12, 24),
            "128-series panel (h=24, input 96)": (panel, "D", 24, 96)}


def models(quick: bool) -> list[dict]:
    rows = []
    steps, repeat = (5, 1) if quick else (30, 3)
    for data_name, (df, freq, h, input_size) in _datasets(quick).items():
        for label, cls, kwargs, on_panel in MODELS:
            if not on_panel and data_name != AIR:
                continue
            row = {"model": label, "data": data_name}
            for kernels_path in ("numba", "numpy"):
                times = []
                with ndwork.optimizations(kernels=kernels_path):
                    for i in range(repeat + 1):  # the first fit warms the caches
                        nf = NeuralForecast([cls(h=h, input_size=input_size, max_steps=steps,
                                                 **kwargs)], freq)
                        start = time.perf_counter()
                        nf.fit(df, verbose=False)
                        if i:
                            times.append(time.perf_counter() - start)
                    if kernels_path == "numba":
                        one = df[df.unique_id == df.unique_id.iloc[0]]
                        single = NeuralForecast([cls(h=h, input_size=input_size, max_steps=2,
                                                     **kwargs)], freq).fit(one, verbose=False)
                        row["predict one series ms"] = latencies(
                            single.predict, calls=20 if quick else 100)["median_s"] * 1e3
                row[f"steps/s {kernels_path}"] = steps / statistics.median(times)
            row["numba/numpy"] = row["steps/s numba"] / row["steps/s numpy"]
            rows.append(row)
    return rows


def bptt_memory(t: int = 1024, hidden: int = 256, windows: int = 128) -> dict:
    """Peak bytes of one LSTM layer's forward and backward beyond its inputs, against the
    activations the backward needs: h, c (B, T, H) and the gates (B, T, 4H)."""
    tensors = _layer("lstm", t, hidden, windows)
    kept = 6 * windows * t * hidden * 4
    peak = _peak_bytes(lambda: _forward_backward("lstm", tensors))
    return {"T": t, "H": hidden, "windows": windows, "kept MiB": kept / 2**20,
            "peak MiB": peak / 2**20, "peak / kept": peak / kept,
            "kept": "h (B, T, H), c (B, T, H), gates (B, T, 4H), float32"}


def run(quick: bool = False) -> dict:
    return {"kernels": kernels(quick), "models": models(quick),
            "bptt_memory": bptt_memory(t=128, hidden=64, windows=32) if quick else bptt_memory()}


def render(results: dict) -> str:
    memory = results["bptt_memory"]
    return "\n\n".join([
        "One recurrent layer, forward + backward through time, 32 windows:",
        table(results["kernels"], ["cell", "T", "H", "numba ms", "numpy ms", "numba/numpy",
                                   "numba GFLOP/s", "peak MiB"]),
        "Models at NeuralForecast's defaults:",
        table(results["models"], ["model", "data", "steps/s numba", "steps/s numpy",
                                  "numba/numpy", "predict one series ms"]),
        f"LSTM backward through time, T={memory['T']}, H={memory['H']}, {memory['windows']} "
        f"windows: peak {memory['peak MiB']:.0f} MiB against {memory['kept MiB']:.0f} MiB kept "
        f"({memory['kept']}): {memory['peak / kept']:.2f}x",
    ])
