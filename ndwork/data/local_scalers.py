"""NeuralForecast's local scalers, applied to the panel before windowing.

local_scaler_type scales each series' target and exogenous columns by that series'
statistics; forecasts are mapped back exactly. local_static_scaler_type scales each
static column across the series. The scalers are coreforecast's, as NeuralForecast's
are, so both libraries scale identically; their statistics ((n, 2) per column) travel
with the panel, through subsets and checkpoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from coreforecast.grouped_array import GroupedArray
from coreforecast.scalers import (
    LocalBoxCoxScaler,
    LocalMinMaxScaler,
    LocalRobustScaler,
    LocalStandardScaler,
)

LOCAL_SCALERS = {
    "standard": LocalStandardScaler,
    "robust": lambda: LocalRobustScaler(scale="mad"),
    "robust-iqr": lambda: LocalRobustScaler(scale="iqr"),
    "minmax": LocalMinMaxScaler,
    "boxcox": lambda: LocalBoxCoxScaler(method="loglik", lower=0.0),
}


def check_scaler_type(name: str, value) -> None:
    if value is not None and value not in LOCAL_SCALERS:
        raise ValueError(f"{name}={value!r} is not a local scaler; use one of "
                         f"{list(LOCAL_SCALERS)} or None (NeuralForecast's).")


@dataclasses.dataclass
class LocalScaling:
    """The scalers' types and statistics: per series for temporal columns ("y" the
    target), one row for static columns."""

    kind: str | None
    static_kind: str | None
    stats: dict[str, np.ndarray]          # column -> (n_series, 2)
    static_stats: dict[str, np.ndarray]   # column -> (1, 2)

    def subset(self, series: np.ndarray) -> LocalScaling:
        return dataclasses.replace(self, stats={c: s[series] for c, s in self.stats.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """The statistics as named arrays (for a checkpoint)."""
        return {**{f"stats.{c}": s for c, s in self.stats.items()},
                **{f"static_stats.{c}": s for c, s in self.static_stats.items()}}

    @classmethod
    def from_arrays(cls, kind, static_kind, arrays: dict) -> LocalScaling:
        pick = {p: {k.removeprefix(p): v for k, v in arrays.items() if k.startswith(p)}
                for p in ("stats.", "static_stats.")}
        return cls(kind, static_kind, pick["stats."], pick["static_stats."])

    def inverse_target(self, values: np.ndarray) -> np.ndarray:
        """Forecasts (n_series, steps, ...) in the target's units."""
        if self.kind is None:
            return values
        return _apply(self.kind, self.stats["y"], values, inverse=True)

    def transform(self, col: str, values: np.ndarray) -> np.ndarray:
        """Temporal column `col`'s values (n_series, steps) in the scaled units."""
        if self.kind is None or col not in self.stats:
            return values
        return _apply(self.kind, self.stats[col], values, inverse=False)

    def transform_flat(self, col: str, values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
        """Temporal column `col`'s values of a panel laid out by `indptr`, scaled."""
        if self.kind is None or col not in self.stats:
            return values
        scaler = _scaler(self.kind, self.stats[col].astype(values.dtype, copy=False))
        return scaler.transform(GroupedArray(np.ascontiguousarray(values), indptr))

    def transform_static(self, static: np.ndarray, cols: list[str]) -> np.ndarray:
        out = static.copy()
        for j, col in enumerate(cols):
            if col in self.static_stats:
                out[:, j] = _apply(self.static_kind, self.static_stats[col], static[None, :, j],
                                   inverse=False)[0]
        return out


def _scaler(kind: str, stats: np.ndarray):
    scaler = LOCAL_SCALERS[kind]()
    scaler.stats_ = stats
    return scaler


def _apply(kind: str, stats: np.ndarray, values: np.ndarray, inverse: bool) -> np.ndarray:
    """values (groups, steps, ...) scaled (or unscaled) by each group's stats row."""
    groups, steps = values.shape[:2]
    columns = np.moveaxis(values.reshape(groups, steps, -1), 2, 0)  # (k, groups, steps)
    scaler = _scaler(kind, stats.astype(values.dtype, copy=False))
    apply = scaler.inverse_transform if inverse else scaler.transform
    indptr = np.arange(0, groups * steps + 1, steps)
    out = [apply(GroupedArray(np.ascontiguousarray(c).reshape(-1), indptr)) for c in columns]
    return np.stack(out, axis=-1).reshape(values.shape)


def fit_transform(y: np.ndarray, temporal: np.ndarray, temporal_cols: list[str],
                  static: np.ndarray, static_cols: list[str], indptr: np.ndarray,
                  kind: str | None, static_kind: str | None, skip=()):
    """Fit the scalers on the panel's arrays; return the scaled arrays and the scaling.
    Columns in `skip` (categorical ones) are left as they are."""
    stats, static_stats = {}, {}
    if kind is not None:
        y, temporal = y.copy(), temporal.copy()
        columns = [("y", y, None)] + [(c, temporal, j) for j, c in enumerate(temporal_cols)
                                      if c not in skip]
        for col, array, j in columns:
            values = np.ascontiguousarray(array if j is None else array[:, j])
            scaler = _fit(kind, col, values, indptr)
            stats[col] = scaler.stats_
            scaled = scaler.transform(GroupedArray(values, indptr))
            if j is None:
                array[:] = scaled
            else:
                array[:, j] = scaled
    if static_kind is not None and static.shape[1]:
        static = static.copy()
        whole = np.array([0, static.shape[0]])
        for j, col in enumerate(static_cols):
            if col in skip:
                continue
            values = np.ascontiguousarray(static[:, j])
            scaler = _fit(static_kind, col, values, whole)
            static_stats[col] = scaler.stats_
            static[:, j] = scaler.transform(GroupedArray(values, whole))
    scaling = (LocalScaling(kind, static_kind, stats, static_stats)
               if kind is not None or static_kind is not None else None)
    return y, temporal, static, scaling


def _fit(kind, col, values, indptr):
    try:
        return LOCAL_SCALERS[kind]().fit(GroupedArray(values, indptr))
    except ValueError as e:  # Box-Cox on negative values
        raise ValueError(f"local scaler {kind!r} cannot scale column {col!r}: {e} Use another "
                         f"local_scaler_type (standard, robust, minmax) for data with "
                         f"negative values.") from None
