"""Predict latency beside NeuralForecast (peers environment): one series (AirPassengers),
`nf.predict()` end to end, frame in and frame out, both libraries with the same models
at their defaults (h=12, input_size=24), 2 threads each; medians of alternating calls.

    .venv-peers/bin/python -m ndwork.bench latency
"""

from __future__ import annotations

import statistics
import warnings

from ndwork.bench.common import latencies, machine, table

MODELS = ["MLP", "NHITS", "NBEATS", "DLinear", "NLinear", "TiDE", "VanillaTransformer",
          "Informer", "PatchTST", "iTransformer"]
THREADS = 2


def run(quick: bool = False) -> dict:
    import neuralforecast
    import neuralforecast.models
    import torch

    import ndwork
    import ndwork.models
    from ndwork.bench.peers import NF_TRAINER
    from ndwork.datasets import air_passengers

    torch.set_num_threads(THREADS)
    df, calls = air_passengers(), (10 if quick else 30)
    rows = []
    with warnings.catch_warnings(), ndwork.optimizations(threads=THREADS):
        warnings.simplefilter("ignore")
        for name in MODELS[:3] if quick else MODELS:
            options = dict(h=12, input_size=24, max_steps=2)
            if name == "iTransformer":
                options["n_series"] = 1
            theirs = neuralforecast.NeuralForecast(
                [getattr(neuralforecast.models, name)(**options, **NF_TRAINER)], freq="MS")
            theirs.fit(df)
            ours = ndwork.NeuralForecast([getattr(ndwork.models, name)(**options)], freq="MS")
            ours.fit(df, verbose=False)
            a, b = [], []
            for _ in range(3):  # alternating, so drift hits both sides
                a.append(latencies(theirs.predict, calls)["median_s"])
                b.append(latencies(ours.predict, calls)["median_s"])
            nf_s, nd_s = statistics.median(a), statistics.median(b)
            rows.append({"model": name, "neuralforecast_ms": nf_s * 1e3, "ndwork_ms": nd_s * 1e3,
                         "speed-up": nf_s / nd_s})
    return {"machine": machine(), "threads": THREADS, "rows": rows}


def render(results: dict) -> str:
    head = (f"predict() of one series, end to end, against NeuralForecast "
            f"({results['threads']} threads each; medians)")
    return head + "\n" + table(results["rows"], ["model", "neuralforecast_ms", "ndwork_ms",
                                                 "speed-up"])
