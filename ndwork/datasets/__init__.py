"""Shipped and generated datasets (no downloads)."""

from importlib import resources

import numpy as np
import pandas as pd


def air_passengers() -> pd.DataFrame:
    """Monthly airline passengers 1949-1960 (Box & Jenkins), 144 points, freq "MS"."""
    with resources.files(__package__).joinpath("air_passengers.csv").open() as f:
        df = pd.read_csv(f, parse_dates=["ds"])
    return df.astype({"y": np.float32})


def us_employment() -> pd.DataFrame:
    """A public panel: U.S. employment (thousands, seasonally adjusted) in the 22
    supersectors the Bureau of Labor Statistics' Current Employment Statistics track
    (nonfarm total included), monthly from January 2006 to December 2015: 22 series of
    120 points, freq "MS". Public domain; as bundled by the vega-datasets collection."""
    with resources.files(__package__).joinpath("us_employment.csv").open() as f:
        wide = pd.read_csv(f, parse_dates=["ds"])
    df = wide.melt(id_vars="ds", var_name="unique_id", value_name="y")
    return df[["unique_id", "ds", "y"]].astype({"y": np.float32})


def synthetic_panel(n_series: int = 100, length: int = 500, seed: int = 0,
                    freq: str = "D") -> pd.DataFrame:
    """Deterministic panel of trend + two seasonalities + AR(1) noise, long format."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(10, 100, (n_series, 1))
    trend = rng.normal(0, 0.05, (n_series, 1)) * t
    period = rng.choice([7, 12, 24], (n_series, 1))
    season = rng.uniform(1, 10, (n_series, 1)) * np.sin(2 * np.pi * t / period)
    season2 = rng.uniform(0, 3, (n_series, 1)) * np.cos(2 * np.pi * t / (period * 4))
    shocks = rng.normal(0, 1, (n_series, length))
    noise = np.zeros_like(shocks)
    for i in range(1, length):
        noise[:, i] = 0.6 * noise[:, i - 1] + shocks[:, i]
    y = (level + trend + season + season2 + noise).astype(np.float32)
    ds = pd.date_range("2000-01-01", periods=length, freq=freq)
    width = len(str(n_series - 1))
    return pd.DataFrame({
        "unique_id": np.repeat([f"s{i:0{width}d}" for i in range(n_series)], length),
        "ds": np.tile(ds, n_series),
        "y": y.reshape(-1),
    })
