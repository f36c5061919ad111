"""Prediction intervals for any model: conformal calibration (NeuralForecast 3.3's
`PredictionIntervals`) and the level/quantile requests predict takes; and
NeuralForecast's example data (`from ndwork.utils import AirPassengersDF`) and calendar
features (`augment_calendar_df`), as `neuralforecast.utils` has them."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

CONFORMAL_METHODS = ("conformal_distribution", "conformal_error")


class PredictionIntervals:
    """Conformal prediction intervals, calibrated inside fit.

    fit(df, prediction_intervals=PredictionIntervals(n_windows=2)) cross-validates the
    models on the last n_windows horizons of df (step_size apart), keeps each series'
    absolute errors per horizon step, then fits on all of df; predict(level=[80, 90])
    turns them into intervals around the point forecast. method: "conformal_distribution"
    (quantiles of forecast +- the errors) or "conformal_error" (forecast +- the errors'
    quantile), as NeuralForecast names them.
    """

    def __init__(self, n_windows: int = 2, method: str = "conformal_distribution",
                 step_size: int = 1):
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 2:
            raise ValueError(f"PredictionIntervals(n_windows={n_windows!r}): conformal intervals "
                             f"need at least two calibration windows; use n_windows >= 2.")
        if method not in CONFORMAL_METHODS:
            raise ValueError(f"PredictionIntervals(method={method!r}) is not known; use one of "
                             f"{CONFORMAL_METHODS}.")
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"PredictionIntervals(step_size={step_size!r}) must be a positive "
                             f"integer.")
        self.n_windows, self.method, self.step_size = n_windows, method, step_size

    def config(self) -> dict:
        return {"n_windows": self.n_windows, "method": self.method, "step_size": self.step_size}

    def __repr__(self) -> str:
        return (f"PredictionIntervals(n_windows={self.n_windows}, method={self.method!r}, "
                f"step_size={self.step_size})")


class Request:
    """What predict(level=..., quantiles=...) asks for: sorted quantiles and the column
    suffix of each, named as NeuralForecast names them."""

    def __init__(self, level=None, quantiles=None):
        if level is not None and quantiles is not None:
            raise ValueError("pass level or quantiles, not both.")
        self.has_level = level is not None
        if self.has_level:
            level = sorted(set(level))
            if not level or not all(0 < lv < 100 for lv in level):
                raise ValueError(f"level {level} must lie strictly between 0 and 100, "
                                 f"e.g. [80, 90].")
            self.quantiles = sorted({q for lv in level for q in ((50 - lv / 2) / 100,
                                                                  (50 + lv / 2) / 100)})
        else:
            self.quantiles = sorted(set(float(q) for q in quantiles))
            if not self.quantiles or not all(0 < q < 1 for q in self.quantiles):
                raise ValueError(f"quantiles {list(quantiles)} must lie strictly between 0 "
                                 f"and 1, e.g. [0.1, 0.5, 0.9].")

    def suffix(self, q: float, conformal: bool = False) -> str:
        if not self.has_level:  # NeuralForecast: "_ql" for models, "-ql" for conformal
            return f"{'-' if conformal else '_'}ql{q}"
        if q < 0.5:
            return f"-lo-{int(round(100 - 200 * q))}"
        if q > 0.5:
            return f"-hi-{int(round(100 - 200 * (1 - q)))}"
        return "-median"


def conformal_quantiles(point: np.ndarray, scores: np.ndarray, quantiles: list[float],
                        method: str) -> np.ndarray:
    """point (S, h) forecasts, scores (S, n_windows, h) absolute calibration errors ->
    (S, h, Q) the requested quantiles of the forecast's distribution."""
    if method == "conformal_distribution":
        paths = np.concatenate([point[:, None] - scores, point[:, None] + scores], axis=1)
        return np.moveaxis(np.quantile(paths, quantiles, axis=1), 0, -1)
    out = []
    for q in quantiles:
        if q == 0.5:
            out.append(point)
        else:
            width = np.quantile(scores, q if q > 0.5 else 1 - q, axis=1)
            out.append(point + width if q > 0.5 else point - width)
    return np.stack(out, axis=-1)


# NeuralForecast's calendar features, each scaled to [-0.5, 0.5], and those it adds per
# frequency (augment_calendar_df)
CALENDAR_FEATURES = {
    "month": lambda ds: (ds.month - 1) / 11.0 - 0.5,
    "yearweek": lambda ds: (ds.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
    "monthday": lambda ds: (ds.day - 1) / 30.0 - 0.5,
    "weekday": lambda ds: ds.day_of_week / 6.0 - 0.5,
    "yearday": lambda ds: (ds.day_of_year - 1) / 365.0 - 0.5,
    "dayhour": lambda ds: ds.hour / 23.0 - 0.5,
    "hourminute": lambda ds: ds.minute / 59.0 - 0.5,
    "minutesecond": lambda ds: ds.second / 59.0 - 0.5,
}
_DAILY = ["weekday", "monthday", "yearday"]
CALENDAR_COLUMNS = {"Q": ["month"], "M": ["month"], "MS": ["month"],
                    "W": ["monthday", "yearweek"], "D": _DAILY, "B": _DAILY,
                    "H": ["dayhour", *_DAILY], "T": ["hourminute", "dayhour", *_DAILY],
                    "S": ["minutesecond", "hourminute", "dayhour", *_DAILY]}
_PANDAS_ALIASES = {"QS": "Q", "QE": "Q", "ME": "M", "h": "H", "min": "T", "s": "S"}


def augment_calendar_df(df: pd.DataFrame, freq: str = "H") -> tuple[pd.DataFrame, list[str]]:
    """NeuralForecast's augment_calendar_df: df with calendar features of its ds added
    (for futr_exog_list), and their names; which features depends on freq (Q, M, MS: the
    month; W: day of month and week of year; D, B: day of week, month and year; H, T, S
    add hour, minute, second). pandas' newer aliases (ME, QS, h, min, s) are taken too."""
    columns = CALENDAR_COLUMNS.get(_PANDAS_ALIASES.get(freq, freq))
    if columns is None:
        raise ValueError(f"augment_calendar_df(freq={freq!r}): calendar features exist for "
                         f"{sorted(CALENDAR_COLUMNS)} (and {sorted(_PANDAS_ALIASES)}).")
    ds = pd.DatetimeIndex(pd.to_datetime(df["ds"].to_numpy()))
    out = df.copy()
    for name in columns:  # by position, whatever df's index
        out[name] = np.asarray(CALENDAR_FEATURES[name](ds), dtype=np.float64)
    return out, list(columns)


EXAMPLES = ("AirPassengers", "AirPassengersDF", "AirPassengersPanel", "AirPassengersStatic")


def __getattr__(name: str):
    """NeuralForecast's example data, built from the bundled AirPassengers on first use:
    the float32 array, the one-series frame (unique_id 1.0, month-end ds), the two-series
    panel (Airline2 = Airline1 + 300, with `trend` and the seasonal-naive `y_[lag12]`
    columns) and its static dummies, as neuralforecast.utils defines them."""
    if name in EXAMPLES:
        return _examples()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _examples() -> dict:
    from ndwork.datasets import air_passengers

    y = air_passengers()["y"].to_numpy(np.float32)
    month_ends = pd.date_range("1949-01-01", periods=len(y), freq=pd.offsets.MonthEnd())
    panel = pd.DataFrame({"unique_id": np.repeat(["Airline1", "Airline2"], len(y)),
                          "ds": np.tile(month_ends.to_numpy(), 2),
                          "y": np.concatenate([y, y + 300])})
    panel["trend"] = np.arange(len(panel))
    panel["y_[lag12]"] = panel.groupby("unique_id")["y"].shift(12).fillna(panel["y"])
    return {"AirPassengers": y,
            "AirPassengersDF": pd.DataFrame({"unique_id": np.ones(len(y)), "ds": month_ends,
                                             "y": y}),
            "AirPassengersPanel": panel,
            # NeuralForecast's dummies, as it sets them (airline1 is 1 for Airline2)
            "AirPassengersStatic": pd.DataFrame({"unique_id": ["Airline1", "Airline2"],
                                                 "airline1": [0, 1], "airline2": [1, 0]})}
