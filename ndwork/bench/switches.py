"""Switches suite: one training run end to end with every optimization on against every
optimization off, and each optimization alone, in the same run.

The run is the same for every configuration: a VanillaTransformer (attention, dense
layers, GELU, LayerNorm, Adam: every switch has work to do) on a synthetic panel, the
same data, seed and number of steps. "All off" is the numpy reference kernels,
materialized attention, one thread and float32; "all on" is numba kernels, flash
attention, every core and precision="auto" (each dense layer's GEMMs in bf16 where that
measured faster here, which at this workload's small layers is float32). A factor
"alone" turns that one switch on from "all off": mixed precision alone runs bf16 on the
reference kernels and one thread, where its GEMMs cannot run natively (float32 on
bf16-stored activations): it shows what the precision costs without its hardware.

This replaces multiplying unrelated factors (a kernel median, an attention-kernel
ratio, the best of several parallel workloads): the product of factors measured on
different work is not a speed-up of any run.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings

import ndwork
from ndwork import NeuralForecast
from ndwork.bench.common import table
from ndwork.datasets import synthetic_panel
from ndwork.kernels.gemm import PrecisionFallbackWarning
from ndwork.models import VanillaTransformer

ALL_OFF = dict(kernels="numpy", attention="naive", threads=1, precision="fp32")
ALL_ON = dict(kernels="numba", attention="flash", threads=os.cpu_count() or 1, precision="auto")
SWITCHES = {"numba kernels": "kernels", "flash attention": "attention", "threads": "threads",
            "mixed precision": "precision"}


def workload(quick: bool) -> dict:
    """The training run every configuration repeats."""
    return dict(h=24, input_size=256 if quick else 512, hidden_size=64, n_head=4,
                conv_hidden_size=64, windows_batch_size=16, max_steps=4 if quick else 12,
                random_seed=1)


def configurations() -> dict[str, dict]:
    configs = {"all off": ALL_OFF, "all on": ALL_ON}
    for label, switch in SWITCHES.items():
        configs[f"{label} alone"] = {**ALL_OFF, switch: ALL_ON[switch]}
    configs["mixed precision alone"]["precision"] = "bf16"  # "auto" alone would be fp32
    return configs


def run(quick: bool = False) -> dict:
    model_kwargs = workload(quick)
    df = synthetic_panel(8, model_kwargs["input_size"] + 200, seed=0)
    repeat = 1 if quick else 3
    configs = configurations()
    times: dict[str, list[float]] = {name: [] for name in configs}
    losses: dict[str, float] = {}
    for i in range(repeat + 1):  # interleaved: a shared machine's drift hits every config
        for name, switches in configs.items():
            nf = NeuralForecast([VanillaTransformer(**model_kwargs)], "D")
            with ndwork.optimizations(**switches), warnings.catch_warnings():
                warnings.simplefilter("ignore", PrecisionFallbackWarning)  # said in the doc
                start = time.perf_counter()
                nf.fit(df, verbose=False)
                seconds = time.perf_counter() - start
            if i:  # the first round warms every path (compilation, BLAS buffers)
                times[name].append(seconds)
            losses[name] = nf.states[0].train_losses[-1][1]
    off = statistics.median(times["all off"])
    rows = [{"configuration": name, **configs[name],
             "fit s": statistics.median(times[name]),
             "speed-up vs all off": off / statistics.median(times[name]),
             "last train loss": losses[name]} for name in configs]
    return {"workload": {"model": "VanillaTransformer", **model_kwargs,
                         "data": "synthetic_panel(8 series)", "repeats": repeat},
            "rows": rows}


def render(results: dict) -> str:
    w = results["workload"]
    return (f"{w['model']} h={w['h']} input_size={w['input_size']} hidden={w['hidden_size']}, "
            f"{w['windows_batch_size']} windows a step, {w['max_steps']} steps, median of "
            f"{w['repeats']}:\n"
            + table(results["rows"], ["configuration", "kernels", "attention", "threads", "precision",
                                      "fit s", "speed-up vs all off", "last train loss"]))
