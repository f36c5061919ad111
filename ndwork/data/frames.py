"""Polars frames in and out (polars is optional: NeuralForecast accepts either kind, and
answers in the kind it was given)."""

from __future__ import annotations

import pandas as pd


def is_polars(frame) -> bool:
    return type(frame).__module__.split(".")[0] == "polars"


def to_pandas(frame):
    """A polars DataFrame as pandas (column by column through numpy: no pyarrow needed);
    anything else as it is."""
    if not is_polars(frame):
        return frame
    return pd.DataFrame({name: frame.get_column(name).to_numpy() for name in frame.columns})


def to_polars(frame: pd.DataFrame):
    try:
        import polars as pl
    except ImportError:
        raise ValueError("this NeuralForecast answers in polars frames (it was given one) but "
                         "polars is not installed; pip install 'ndwork[polars]', or pass pandas "
                         "frames.") from None
    return pl.DataFrame({name: frame[name].to_numpy() for name in frame.columns})
