"""Categorical exogenous columns coded as NeuralForecast codes them: the values seen at
fit, sorted, become 1..K; any other value (unseen at fit, or missing) becomes 0, which
the models embed as the mean of the learnt categories."""

from __future__ import annotations

import numpy as np
import pandas as pd


def build_vocabulary(cardinalities: dict[str, int], *frames: pd.DataFrame | None) -> dict:
    """{column: its sorted values} from the first of `frames` that holds the column."""
    vocabulary = {}
    for col, cardinality in cardinalities.items():
        frame = next((f for f in frames if f is not None and col in f.columns), None)
        if frame is None:
            raise ValueError(f"categorical column {col!r} (cat_exog_list) is in neither df nor "
                             f"static_df; add it, or take it out of cat_exog_list.")
        values = sorted(frame[col].dropna().unique().tolist())
        if len(values) > cardinality:
            raise ValueError(f"categorical column {col!r} has {len(values)} distinct values in "
                             f"the training data, more than categorical_cardinalities[{col!r}] "
                             f"= {cardinality}; declare at least {len(values)}.")
        vocabulary[col] = values
    return vocabulary


def encode(frame: pd.DataFrame | None, vocabulary: dict) -> pd.DataFrame | None:
    """frame with its categorical columns replaced by their codes."""
    cols = [c for c in vocabulary if frame is not None and c in frame.columns]
    if not cols:
        return frame
    frame = frame.copy()
    for col in cols:
        codes = {value: code for code, value in enumerate(vocabulary[col], start=1)}
        frame[col] = frame[col].map(codes).fillna(0).astype(np.int64)
    return frame
