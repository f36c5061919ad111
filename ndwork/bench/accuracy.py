"""Accuracy suite (peers environment): ndwork and NeuralForecast trained alike on a public
panel, forecasts scored on the same held-out points, mean over three seeds.

The panel is `ndwork.datasets.us_employment()` (22 BLS supersectors, 120 months). Each
library cross-validates every model at NeuralForecast's defaults but `max_steps`: one fit
on all but the last 36 months, then three 12-month forecasts from cutoffs 12 months
apart (792 points per seed). Reported per model: MAE (dominated by the large sectors)
and the mean over series of MAE / mean |y| (every sector weighs alike), each the mean
over seeds, and their ndwork / NeuralForecast ratios.

    .venv-peers/bin/python -m ndwork.bench accuracy
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from ndwork.bench.common import table
from ndwork.datasets import us_employment

H, INPUT, WINDOWS = 12, 24, 3
MODELS = [("LSTM", {}), ("GRU", {}), ("RNN", {}), ("TCN", {}), ("BiTCN", {}),
          ("DilatedRNN", {}), ("LSTM", {"recurrent": True}), ("xLSTM", {})]
SEEDS = (1, 2, 3)


def _scores(cv, column: str) -> tuple[float, float]:
    error = (cv[column] - cv["y"]).abs()
    scale = cv.groupby("unique_id")["y"].transform(lambda y: y.abs().mean())
    relative = (error / scale).groupby(cv["unique_id"]).mean().mean()
    return float(error.mean()), float(relative)


def _cross_validate(library: str, name: str, options: dict, steps: int, seed: int, df):
    if library == "ndwork":
        from ndwork import NeuralForecast
        from ndwork.models import MODELS as CLASSES

        model = CLASSES[name](h=H, input_size=INPUT, max_steps=steps, random_seed=seed,
                              **options)
        nf = NeuralForecast([model], "MS")
        kwargs = {"verbose": False}
    else:
        import neuralforecast
        import neuralforecast.models

        from ndwork.bench.fidelity import vanilla_slstm
        from ndwork.bench.peers import NF_TRAINER

        with vanilla_slstm():
            model = getattr(neuralforecast.models, name)(
                h=H, input_size=INPUT, max_steps=steps, random_seed=seed, **options,
                **NF_TRAINER)
        nf = neuralforecast.NeuralForecast(models=[model], freq="MS")
        kwargs = {}
    start = time.perf_counter()
    cv = nf.cross_validation(df, n_windows=WINDOWS, step_size=H, **kwargs)
    return cv, time.perf_counter() - start


def compare(name: str, options: dict, steps: int, seeds) -> dict:
    df = us_employment().astype({"y": np.float64})
    label = " ".join([name] + [f"{k}={v}" for k, v in options.items()])
    row = {"model": label, "steps": steps, "seeds": len(seeds)}
    for library in ("ndwork", "NF"):
        maes, relatives, seconds = [], [], []
        try:
            for seed in seeds:
                cv, took = _cross_validate(library, name, options, steps, seed, df)
                mae, relative = _scores(cv, name)
                maes.append(mae)
                relatives.append(relative)
                seconds.append(took)
        except Exception as e:  # NeuralForecast's xLSTM without the xlstm package
            row["NF fails"] = f"{type(e).__name__}: {e}"[:80]
            return row
        row[f"{library} MAE"] = statistics.mean(maes)
        row[f"{library} MAE by seed"] = [round(m, 1) for m in maes]
        row[f"{library} relative MAE"] = statistics.mean(relatives)
        row[f"{library} fit+cv s"] = statistics.median(seconds)
    row["MAE ratio"] = row["ndwork MAE"] / row["NF MAE"]
    row["relative MAE ratio"] = row["ndwork relative MAE"] / row["NF relative MAE"]
    return row


def run(quick: bool = False) -> dict:
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    steps, seeds = (20, SEEDS[:1]) if quick else (300, SEEDS)
    return {"rows": [compare(name, options, steps, seeds) for name, options in MODELS],
            "setup": f"us_employment (22 series x 120 months), h={H}, input_size={INPUT}, "
                     f"{WINDOWS} cross-validation windows 12 months apart, NeuralForecast's "
                     f"defaults, {steps} steps, seeds {list(seeds)}"}


def render(results: dict) -> str:
    return results["setup"] + "\n" + table(
        results["rows"], ["model", "ndwork MAE", "NF MAE", "MAE ratio", "ndwork relative MAE",
                          "NF relative MAE", "relative MAE ratio", "ndwork MAE by seed",
                          "NF MAE by seed", "ndwork fit+cv s", "NF fit+cv s", "NF fails"])
