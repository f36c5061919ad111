"""Probabilistic suite: interval coverage and CRPS on a public panel (the 22 monthly US
employment series, last 12 months held out), ndwork and, in the peers environment,
NeuralForecast with the same models, steps and data in the same run.

Approaches: a point MLP with conformal intervals, MLP with MQLoss, NHITS with
DistributionLoss("StudentT"), DeepAR with a Normal, MLP with IQLoss. Coverage: the share
of held-out values inside the 80% and 90% intervals. CRPS from `simulate()`'s sample
paths, E|X - y| - E|X - X'| / 2, divided by each series' mean |y| so the series weigh
alike.

    python -m ndwork.bench probabilistic [--quick]
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ndwork.bench.common import table

H, INPUT, LEVELS, PATHS = 12, 24, (80, 90), 200
CALIBRATION = dict(n_windows=4, step_size=3)


def holdout(h: int = H) -> tuple[pd.DataFrame, pd.DataFrame]:
    """us_employment without / with only its last h months per series."""
    from ndwork.datasets import us_employment

    df = us_employment()
    is_test = df.groupby("unique_id").cumcount(ascending=False) < h
    return df[~is_test].reset_index(drop=True), df[is_test].reset_index(drop=True)


def coverage(frame: pd.DataFrame, name: str, level: int) -> float:
    """Percent of y inside [name-lo-level, name-hi-level]."""
    inside = (frame["y"] >= frame[f"{name}-lo-{level}"]) & (frame["y"] <= frame[f"{name}-hi-{level}"])
    return float(100 * inside.mean())


def crps(paths: pd.DataFrame, column: str, test: pd.DataFrame, train: pd.DataFrame) -> float:
    """Mean CRPS of the sample paths (unique_id, ds, sample_id, column) against the test
    values, each divided by its series' mean |y| over the training data."""
    truth = test.set_index(["unique_id", "ds"])["y"]
    x = paths.pivot_table(index=["unique_id", "ds"], columns="sample_id",
                          values=column).loc[truth.index].to_numpy(np.float64)
    y = truth.to_numpy(np.float64)[:, None]
    spread = np.abs(x[:, :, None] - x[:, None, :]).mean(axis=(1, 2))
    per_point = np.abs(x - y).mean(axis=1) - 0.5 * spread
    scale = train.groupby("unique_id")["y"].apply(lambda v: np.abs(v).mean())
    return float((per_point / scale.loc[truth.index.get_level_values(0)].to_numpy()).mean())


def models(library, steps: int, seed: int = 1) -> list:
    """The five approaches, built from `library`'s models and losses (ndwork's or
    NeuralForecast's: same names and options)."""
    m, losses = library
    common = dict(h=H, input_size=INPUT, max_steps=steps, scaler_type="robust", random_seed=seed)
    return [m.MLP(**common, alias="conformal"),
            m.MLP(**common, loss=losses.MQLoss(level=list(LEVELS)), alias="quantiles"),
            m.NHITS(**common, loss=losses.DistributionLoss("StudentT", level=list(LEVELS)),
                    alias="studentt"),
            m.DeepAR(**{**common, "scaler_type": "standard"}, lstm_hidden_size=64,
                     windows_batch_size=256, alias="deepar",
                     loss=losses.DistributionLoss("Normal", level=list(LEVELS))),
            m.MLP(**common, loss=losses.IQLoss(), alias="implicit")]


def evaluate(nf, intervals, train, test, quiet: dict) -> dict:
    """Fit, forecast with intervals and simulate: coverage and CRPS per approach."""
    start = time.perf_counter()
    nf.fit(train, prediction_intervals=intervals, **quiet)
    fit_s = time.perf_counter() - start
    fcst = nf.predict(level=list(LEVELS)).merge(test, on=["unique_id", "ds"])
    paths = nf.simulate(n_paths=PATHS, seed=1)
    names = [repr(m) for m in nf.models]
    return {"fit_s": fit_s,
            **{name: {"coverage": {lv: coverage(fcst, name, lv) for lv in LEVELS},
                      "crps": crps(paths, name, test, train)} for name in names}}


SEEDS = (1, 2, 3)


def run(quick: bool = False) -> dict:
    import ndwork.losses
    import ndwork.models
    from ndwork import NeuralForecast
    from ndwork.utils import PredictionIntervals

    steps, seeds = (20, SEEDS[:1]) if quick else (200, SEEDS)
    train, test = holdout()
    results = {"ndwork": [evaluate(NeuralForecast(models((ndwork.models, ndwork.losses), steps,
                                                         seed), freq="MS"),
                                   PredictionIntervals(**CALIBRATION), train, test,
                                   {"verbose": False}) for seed in seeds]}
    try:
        import neuralforecast
        import neuralforecast.losses.pytorch as nf_losses
        import neuralforecast.models as nf_models
        from neuralforecast.utils import PredictionIntervals as NFIntervals

        from ndwork.bench.peers import NF_TRAINER
    except ImportError:
        pass  # the peers environment has it (make peers)
    else:
        results["neuralforecast"] = []
        for seed in seeds:
            peers = models((nf_models, nf_losses), steps, seed)
            for model in peers:
                model.trainer_kwargs.update(NF_TRAINER)
            nf = neuralforecast.NeuralForecast(peers, freq="MS")
            results["neuralforecast"].append(evaluate(nf, NFIntervals(**CALIBRATION), train,
                                                      test, {}))
    rows = []
    for name in ("conformal", "quantiles", "studentt", "deepar", "implicit"):
        row = {"approach": name}
        for library, runs in results.items():
            tag = "ndwork" if library == "ndwork" else "NF"
            for lv in LEVELS:
                row[f"{tag} {lv}% coverage"] = float(np.mean([r[name]["coverage"][lv]
                                                              for r in runs]))
            row[f"{tag} CRPS"] = float(np.mean([r[name]["crps"] for r in runs]))
        rows.append(row)
    return {"rows": rows, "steps": steps, "paths": PATHS, "seeds": list(seeds),
            "results": results,
            "setup": f"us_employment (22 monthly series), last {H} months held out, input "
                     f"{INPUT}, {steps} steps, conformal {CALIBRATION}, CRPS from {PATHS} "
                     f"paths per series (scaled by each series' mean |y|); means over seeds "
                     f"{list(seeds)}"}


def render(results: dict) -> str:
    cols = ["approach"] + [f"{tag} {c}" for tag in ("ndwork", "NF")
                           for c in ("80% coverage", "90% coverage", "CRPS")]
    return results["setup"] + "\n" + table(results["rows"], cols)
