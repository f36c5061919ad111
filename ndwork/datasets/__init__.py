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


# The Current Employment Statistics hierarchy of us_employment's series: each aggregate
# is the sum of the listed series (to the reported rounding)
EMPLOYMENT_PARTS = {
    "nonfarm": ["private", "government"],
    "private": ["goods_producing", "private_service_providing"],
    "service_providing": ["private_service_providing", "government"],
    "goods_producing": ["mining_and_logging", "construction", "manufacturing"],
    "manufacturing": ["durable_goods", "nondurable_goods"],
    "private_service_providing": ["trade_transportation_utilties", "information",
                                  "financial_activities", "professional_and_business_services",
                                  "education_and_health_services", "leisure_and_hospitality",
                                  "other_services"],
    "trade_transportation_utilties": ["wholesale_trade", "retail_trade",
                                      "transportation_and_warehousing", "utilities"],
}


def us_employment_hierarchy() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """us_employment as a public hierarchy (U.S. nonfarm employment by supersector, the
    Bureau of Labor Statistics' own aggregation): 7 aggregates over 15 bottom series.
    Returns (df, S, tags) as hierarchicalforecast does: the long frame, the summing
    matrix S (a frame: one row per series, one column per bottom series, rows in the
    data's sorted order, bottom series last) and {level: unique_ids}. unique_id is
    "aggregate/<name>" or "bottom/<name>", so sorting puts the bottom series last,
    as HINT's reconciliations expect."""
    df = us_employment()
    parts = EMPLOYMENT_PARTS

    def leaves(name):
        return [leaf for part in parts[name] for leaf in leaves(part)] if name in parts else [name]

    bottom = sorted({leaf for name in parts for leaf in leaves(name)})
    aggregates = sorted(parts)
    ids = {name: f"aggregate/{name}" for name in aggregates} | \
        {name: f"bottom/{name}" for name in bottom}
    rows = [[float(b in leaves(name)) for b in bottom] for name in aggregates + bottom]
    S = pd.DataFrame(rows, index=[ids[n] for n in aggregates + bottom],
                     columns=[ids[b] for b in bottom])
    df = df.assign(unique_id=df.unique_id.map(ids)).sort_values(["unique_id", "ds"])
    tags = {"Aggregate": np.array([ids[n] for n in aggregates]),
            "Bottom": np.array([ids[b] for b in bottom])}
    return df.reset_index(drop=True), S, tags


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
