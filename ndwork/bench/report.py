"""The main job on embedded defaults: train and forecast AirPassengers with MLP, NHITS
and NBEATS, then run the kernel and model benchmarks and print their tables."""

from __future__ import annotations

import time

import numpy as np

from ndwork import NeuralForecast
from ndwork.bench import kernels, models
from ndwork.bench.common import table
from ndwork.datasets import air_passengers
from ndwork.models import MLP, NBEATS, NHITS


def forecast_air_passengers() -> dict:
    df = air_passengers()
    train, test = df.iloc[:-12], df.iloc[-12:]
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=500, scaler_type="robust"),
                         NHITS(h=12, input_size=24, max_steps=500, scaler_type="robust"),
                         NBEATS(h=12, input_size=24, max_steps=500, scaler_type="robust")],
                        freq="MS")
    start = time.perf_counter()
    nf.fit(train)
    seconds = time.perf_counter() - start
    fcst = nf.predict()
    truth = test.y.to_numpy()
    rows = [{"model": "seasonal naive",
             "MAE": float(np.abs(train.y.to_numpy()[-12:] - truth).mean())}]
    rows += [{"model": m, "MAE": float(np.abs(fcst[m].to_numpy() - truth).mean())}
             for m in ("MLP", "NHITS", "NBEATS")]
    return {"fit_seconds": seconds, "accuracy": rows,
            "forecast": fcst.assign(ds=fcst.ds.astype(str), y=truth).to_dict("records")}


def run(quick: bool = False) -> dict:
    small = [c for c in models.CONFIGS if c[0] in ("MLP default", "NHITS default", "MLP small",
                                                   "NHITS small")]
    return {"air_passengers": forecast_air_passengers(),
            "kernels": kernels.run(quick=True),
            "models": models.run(quick=quick, configs=small)}


def render(results: dict) -> str:
    air = results["air_passengers"]
    forecast = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()
                 if k != "unique_id"} for r in air["forecast"]]
    return "\n\n".join([
        f"AirPassengers, last 12 months held out (fit of 3 models: {air['fit_seconds']:.1f} s)",
        table(air["accuracy"], ["model", "MAE"]),
        table(forecast, list(forecast[0])),
        "Kernels: numba vs numpy reference (vs numexpr)", kernels.render(results["kernels"]),
        "Models: training and prediction", models.render(results["models"]),
    ])
