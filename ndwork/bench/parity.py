"""What NeuralForecast's options cost a fit: polars frames, categorical exogenous columns,
local scalers, a re-fit that continues from the fitted weights, against the plain path,
as ratios of medians measured in the same run (alternating the two sides).

    python -m ndwork.bench parity
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from ndwork.bench.common import machine, table


def _panel(n_series: int, length: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ndwork.datasets import synthetic_panel

    df = synthetic_panel(n_series, length, seed=0)
    df["weekday"] = df.ds.dt.day_name()  # categorical
    df["weekday_code"] = df.ds.dt.day_of_week.astype(float)  # the same, as a number
    static = pd.DataFrame({"unique_id": df.unique_id.unique()})
    return df, static


def _fit_seconds(make, df, repeat: int, **fit) -> list[float]:
    samples = []
    for _ in range(repeat):
        nf = make()
        start = time.perf_counter()
        nf.fit(df, verbose=False, **fit)
        samples.append(time.perf_counter() - start)
    return samples


def run(quick: bool = False) -> dict:
    import polars as pl

    from ndwork import NeuralForecast
    from ndwork.models import MLP

    n_series, length, steps, repeat = (20, 200, 20, 3) if quick else (100, 500, 100, 5)
    df, _ = _panel(n_series, length)
    common = dict(h=12, input_size=48, max_steps=steps, enable_progress_bar=False)

    def model(**options):
        return lambda: NeuralForecast([MLP(**common, **options)], freq="D")

    polars_df = pl.DataFrame({c: df[c].to_numpy() for c in df.columns})
    numeric = dict(futr_exog_list=["weekday_code"])
    categorical = dict(futr_exog_list=["weekday"], cat_exog_list=["weekday"],
                       categorical_cardinalities={"weekday": 7}, cat_emb_dim=1)
    plain_df = df.drop(columns=["weekday"])
    cases = {
        "polars frame vs pandas": ((model(), polars_df.drop("weekday")), (model(), plain_df)),
        "categorical (1-d embedding) vs numeric column": (
            (model(**categorical), df.drop(columns=["weekday_code"])), (model(**numeric), plain_df)),
        "local_scaler_type='standard' vs none": (
            (lambda: NeuralForecast([MLP(**common)], freq="D", local_scaler_type="standard"),
             plain_df), (model(), plain_df)),
    }
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, ((make_a, data_a), (make_b, data_b)) in cases.items():
            a, b = [], []
            for _ in range(repeat):  # alternating, so drift hits both sides
                a += _fit_seconds(make_a, data_a, 1)
                b += _fit_seconds(make_b, data_b, 1)
            rows.append({"case": label, "median_s": float(np.median(a)),
                         "baseline_median_s": float(np.median(b)),
                         "time ratio": float(np.median(a) / np.median(b))})
        # a re-fit continues from the fitted weights: per step, against a fresh fit's
        fresh, again = [], []
        for _ in range(repeat):
            nf = model()()
            fresh += _fit_seconds(lambda nf=nf: nf, plain_df, 1)
            again += _fit_seconds(lambda nf=nf: nf, plain_df, 1)  # fitted: continues
        rows.append({"case": "re-fit (continues) vs first fit", "median_s": float(np.median(again)),
                     "baseline_median_s": float(np.median(fresh)),
                     "time ratio": float(np.median(again) / np.median(fresh))})
    return {"machine": machine(), "panel": {"series": n_series, "length": length,
                                           "steps": steps, "repeat": repeat},
            "rows": rows}


def render(results: dict) -> str:
    p = results["panel"]
    head = (f"Fit time of NeuralForecast's options against the plain path (MLP, {p['series']} "
            f"series x {p['length']} points, {p['steps']} steps; medians of {p['repeat']} "
            f"alternating fits)")
    return head + "\n" + table(results["rows"], ["case", "median_s", "baseline_median_s",
                                                 "time ratio"])
