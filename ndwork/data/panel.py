"""Validation of long-format frames and their flat-array form."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from ndwork.config import active
from ndwork.data.local_scalers import LocalScaling, fit_transform

REQUIRED = ("unique_id", "ds", "y")
MASK, WEIGHT = "available_mask", "sample_weight"  # NeuralForecast's optional columns


def _check_weights(df: pd.DataFrame, col: str, name: str) -> np.ndarray:
    """available_mask (0 or 1) or sample_weight (finite, >= 0) as float64."""
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if col == MASK:
        bad |= ~np.isin(values, (0.0, 1.0))
    if bad.any():
        rule = "0 or 1" if col == MASK else "a finite number >= 0"
        _fail(f"column {col!r} of {name} must be {rule} on every row, {int(bad.sum())} row(s) "
              f"are not (series {df.loc[bad, 'unique_id'].unique()[:5].tolist()}).")
    return values


def _fail(message: str) -> None:
    raise ValueError(message)


def validate_frame(df: pd.DataFrame, freq, columns: list[str] = (), name: str = "df",
                   target: bool = True) -> pd.DataFrame:
    """Check a long-format frame and return it sorted by (unique_id, ds).

    Raises ValueError naming the problem and the fix: missing columns, non-numeric or
    non-finite values, duplicated (unique_id, ds) rows, timestamps off the frequency.
    """
    if not isinstance(df, pd.DataFrame):
        _fail(f"{name} must be a pandas or polars DataFrame in long format ({', '.join(REQUIRED)}), "
              f"got {type(df).__name__}.")
    required = list(REQUIRED if target else REQUIRED[:2]) + list(columns)
    missing = [c for c in required if c not in df.columns]
    if missing:
        _fail(f"{name} is missing column(s) {missing}; it has {list(df.columns)}. "
              f"Rename yours, e.g. df.rename(columns={{'your_id': 'unique_id', "
              f"'your_time': 'ds', 'your_target': 'y'}}), or add the exogenous columns.")
    numeric = (["y"] if target else []) + list(columns)
    # NeuralForecast's available_mask: rows marked 0 are missing, their values unused
    observed = np.ones(len(df), dtype=bool)
    if MASK in df.columns:
        observed = _check_weights(df, MASK, name) > 0
    if WEIGHT in df.columns:
        _check_weights(df.loc[observed], WEIGHT, name)
    for col in numeric:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            _fail(f"column {col!r} of {name} must be numeric, got dtype {df[col].dtype}; "
                  f"convert it with pd.to_numeric(df[{col!r}]).")
        values = df[col].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) & observed
        if bad.any():
            ids = df.loc[bad, "unique_id"].unique()[:5].tolist()
            _fail(f"column {col!r} of {name} has {int(bad.sum())} NaN or inf value(s) "
                  f"(series {ids}); fill or drop them, or mark those rows missing with an "
                  f"{MASK!r} column of 0s (1 elsewhere), as NeuralForecast takes them.")
    ds = df["ds"]
    if freq == 1 or isinstance(freq, int):
        if not pd.api.types.is_integer_dtype(ds):
            _fail(f"freq={freq!r} needs integer ds, but {name}['ds'] has dtype {ds.dtype}; "
                  f"pass a pandas frequency string such as freq='D' for timestamps.")
    else:
        if not pd.api.types.is_datetime64_any_dtype(ds):
            _fail(f"{name}['ds'] must be datetime for freq={freq!r}, got dtype {ds.dtype}; "
                  f"convert it with pd.to_datetime(df['ds']), or use integer ds with freq=1.")
    # sorted by (unique_id, ds) with one hash of the ids and integer keys (frames mostly
    # arrive sorted: then no sort at all)
    codes = pd.factorize(df["unique_id"], sort=True)[0]
    key = ds.to_numpy() if isinstance(freq, int) else pd.DatetimeIndex(ds).asi8
    step_code, step_key = np.diff(codes), np.diff(key)
    if (step_code < 0).any() or ((step_code == 0) & (step_key < 0)).any():
        order = np.lexsort((key, codes))
        out = df.iloc[order].reset_index(drop=True)
        step_code, step_key = np.diff(codes[order]), np.diff(key[order])
    else:
        out = df.reset_index(drop=True)
    dup = np.flatnonzero((step_code == 0) & (step_key == 0)) + 1
    if len(dup):
        first = out.loc[dup[0], ["unique_id", "ds"]].tolist()
        _fail(f"{name} has {len(dup)} duplicated (unique_id, ds) row(s), e.g. {first}; "
              f"aggregate or drop duplicates first.")
    _check_regular(out, freq, name)
    return out


def _check_regular(df: pd.DataFrame, freq, name: str) -> None:
    uids = df["unique_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
    values = df["ds"].to_numpy()
    offset = None if isinstance(freq, int) else pd.tseries.frequencies.to_offset(freq)
    new_series = np.zeros(max(len(values) - 1, 0), dtype=bool)
    new_series[starts[1:] - 1] = True
    if offset is None or isinstance(offset, pd.offsets.Tick):
        # a fixed step (integers, or D, h, min, ...): one vectorized check of every step
        step = np.diff(values)
        if offset is not None:
            step = step.astype("timedelta64[ns]").astype(np.int64)
        bad_rows = np.flatnonzero((step != (freq if offset is None else offset.nanos))
                                  & ~new_series) + 1
    else:  # calendar frequencies (MS, W-SUN, ...): each date one offset after the last,
        index = pd.DatetimeIndex(values)  # and each series' first on the offset's anchor
        with warnings.catch_warnings():  # offsets pandas cannot vectorize still work
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            stepped = (index[:-1] + offset).to_numpy()
            first = index[starts]
            anchored = ((first + offset) - offset).to_numpy() == first.to_numpy()
        bad_rows = np.r_[np.flatnonzero((stepped != values[1:]) & ~new_series) + 1,
                         starts[~anchored]]
        bad_rows = np.sort(bad_rows)
    if len(bad_rows):
        row = bad_rows[0]
        date = (lambda v: v) if offset is None else pd.Timestamp
        where = (f"{date(values[row - 1])} then {date(values[row])}" if row not in starts
                 else f"it starts at {date(values[row])}, off the frequency's anchor")
        _fail(f"series {uids[row]!r} of {name} has timestamps that are not regular at "
              f"freq={freq!r} ({where}); pass the right freq, or add the missing rows marked "
              f"unavailable: {name} = ndwork.data.fill_gaps({name}, freq={freq!r}).")


def fill_gaps(df: pd.DataFrame, freq) -> pd.DataFrame:
    """df with a row for every timestamp at `freq` between each series' first and last
    one (utilsforecast's fill_gaps for ndwork): the added rows have y = 0 and
    available_mask = 0, so no window reads them as data and no loss scores them
    (NeuralForecast's available_mask), and the other columns (exogenous values) carried
    forward from the series' previous row. Rows already there keep their values and
    their available_mask (1 where the column was absent). Sorted by (unique_id, ds)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        _fail(f"fill_gaps needs columns {list(REQUIRED)}; df is missing {missing}.")
    spans = df.groupby("unique_id", sort=True, observed=True)["ds"].agg(["min", "max"])
    grids = {}  # panels mostly share their spans: one range per distinct span
    for span in set(zip(spans["min"], spans["max"], strict=True)):
        grids[span] = (np.arange(span[0], span[1] + freq, freq) if isinstance(freq, int)
                       else pd.date_range(span[0], span[1], freq=freq).to_numpy())
    parts = [grids[span] for span in zip(spans["min"], spans["max"], strict=True)]
    full = pd.DataFrame({"unique_id": np.repeat(spans.index.to_numpy(), [len(g) for g in parts]),
                         "ds": np.concatenate(parts) if parts else np.array([])})
    full["ds"] = full["ds"].astype(df["ds"].dtype)
    out = full.merge(df.assign(_present=1), on=["unique_id", "ds"], how="left")
    if out["_present"].sum() < len(df):
        _fail(f"fill_gaps: some timestamps of df are not on freq={freq!r}'s grid from each "
              f"series' first one (wrong freq, or dates off its anchor); pass the right freq.")
    added = out["_present"].isna().to_numpy()
    out[MASK] = np.where(added, 0.0, out[MASK] if MASK in out.columns else 1.0)
    out.loc[added, "y"] = 0.0
    others = [c for c in out.columns if c not in (*REQUIRED, MASK, "_present")]
    if others and added.any():  # only the added rows: a row there keeps even its NaNs
        carried = out.groupby("unique_id", sort=False, observed=True)[others].ffill()
        out.loc[added, others] = carried.loc[added]
    return out.drop(columns="_present")


def future_dates(last: np.ndarray, freq, h: int) -> np.ndarray:
    """(n_series * h,) timestamps after each series' last one."""
    if isinstance(freq, int):
        return (last[:, None] + freq * np.arange(1, h + 1)).reshape(-1)
    unique, which = np.unique(last, return_inverse=True)  # panels mostly share end dates
    ahead = np.stack([pd.date_range(u, periods=h + 1, freq=freq).to_numpy()[1:] for u in unique])
    return ahead[which].reshape(-1)


@dataclasses.dataclass
class Panel:
    """Series as slices of flat arrays: series i is rows indptr[i]:indptr[i + 1]."""

    uids: np.ndarray            # (n_series,)
    indptr: np.ndarray          # (n_series + 1,) int64
    y: np.ndarray               # (total,) in the dtype policy's compute dtype
    ds: np.ndarray              # (total,) datetime64 or int64
    temporal: np.ndarray        # (total, n_temporal), the exogenous columns
    temporal_cols: list[str]
    static: np.ndarray          # (n_series, n_static)
    static_cols: list[str]
    scaling: LocalScaling | None = None  # NeuralForecast's local scalers, when applied
    available: np.ndarray | None = None  # (total,) 1 observed, 0 missing (available_mask)
    weight: np.ndarray | None = None     # (total,) NeuralForecast's sample_weight
    target: np.ndarray | None = None     # (total,) y as df gave it: cross_validation's y
    uid_dtype: pd.CategoricalDtype | None = None  # df's, when its unique_id is categorical
    _dates: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def n_series(self) -> int:
        return len(self.uids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, freq, temporal_cols: list[str] = (),
                   static_df: pd.DataFrame | None = None, static_cols: list[str] = (),
                   dtype=None) -> Panel:
        dtype = dtype or active().dtypes.compute
        df = validate_frame(df, freq, list(temporal_cols))
        uids_all = df["unique_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, uids_all[1:] != uids_all[:-1]])
        indptr = np.r_[starts, len(df)].astype(np.int64)
        uids = uids_all[starts]
        temporal = (df[list(temporal_cols)].to_numpy(dtype=dtype) if temporal_cols
                    else np.zeros((len(df), 0), dtype))
        y = df["y"].to_numpy(dtype=dtype)
        available = weight = None
        if MASK in df.columns:
            available = df[MASK].to_numpy(dtype=dtype)
            missing = available == 0  # their values are unused: zeros, as padding
            y, temporal = np.where(missing, 0, y), np.where(missing[:, None], 0, temporal)
        if WEIGHT in df.columns:
            weight = np.nan_to_num(df[WEIGHT].to_numpy(dtype=dtype))
        return cls(uids=uids, indptr=indptr, y=y.astype(dtype, copy=False),
                   ds=df["ds"].to_numpy(), temporal=temporal.astype(dtype, copy=False),
                   temporal_cols=list(temporal_cols),
                   static=static_array(static_df, uids, list(static_cols), dtype),
                   static_cols=list(static_cols), available=available, weight=weight,
                   target=df["y"].to_numpy(),
                   uid_dtype=df["unique_id"].dtype if isinstance(
                       df["unique_id"].dtype, pd.CategoricalDtype) else None)

    def _rows(self, rows: np.ndarray, **changes) -> Panel:
        """The panel of the flat rows `rows` (with `changes` to the other fields)."""
        def pick(a):
            return None if a is None else a[rows]

        return dataclasses.replace(self, y=self.y[rows], ds=self.ds[rows],
                                   temporal=self.temporal[rows], available=pick(self.available),
                                   weight=pick(self.weight), target=pick(self.target), _dates={},
                                   **changes)

    def subset(self, series: np.ndarray) -> Panel:
        """The panel of the series at positions `series` (ascending)."""
        lengths = self.lengths[series]
        rows = _spans(self.indptr[series], lengths)
        return self._rows(rows, uids=self.uids[series], static=self.static[series],
                          indptr=np.r_[0, np.cumsum(lengths)].astype(np.int64),
                          scaling=self.scaling and self.scaling.subset(series))

    def head(self, lengths: np.ndarray) -> Panel:
        """The panel of each series' first lengths[i] points (training without the
        validation and test ends)."""
        rows = _spans(self.indptr[:-1], np.asarray(lengths))
        return self._rows(rows, indptr=np.r_[0, np.cumsum(lengths)].astype(np.int64))

    def append(self, other: Panel) -> Panel:
        """Each series followed by the same series of `other` (NeuralForecast's val_df:
        its timestamps need not continue the series'), scaled as this panel is."""
        if other.n_series != self.n_series or (other.uids != self.uids).any():
            ours, theirs = set(self.uids.tolist()), set(other.uids.tolist())
            raise ValueError(f"val_df must hold the same series as df: series only in df "
                             f"{sorted(ours - theirs)[:5]}, only in val_df "
                             f"{sorted(theirs - ours)[:5]}; give val_df one part per series.")
        if self.scaling is not None:
            y = self.scaling.transform_flat("y", other.y, other.indptr)
            other = dataclasses.replace(other, y=y, temporal=other.temporal.copy())
            for j, col in enumerate(self.temporal_cols):
                other.temporal[:, j] = self.scaling.transform_flat(col, other.temporal[:, j],
                                                                   other.indptr)
        rows = np.concatenate([np.r_[np.arange(a, b), len(self.y) + np.arange(c, d)]
                               for a, b, c, d in zip(self.indptr[:-1], self.indptr[1:],
                                                     other.indptr[:-1], other.indptr[1:],
                                                     strict=True)])

        def joined(a, b):  # a column one of the panels may lack (all ones there)
            if a is None and b is None:
                return None
            a = np.ones(len(self.y), self.y.dtype) if a is None else a
            b = np.ones(len(other.y), self.y.dtype) if b is None else b
            return np.concatenate([a, b])[rows]

        indptr = np.r_[0, np.cumsum(self.lengths + other.lengths)].astype(np.int64)
        return dataclasses.replace(
            self, indptr=indptr, y=np.concatenate([self.y, other.y])[rows],
            ds=np.concatenate([self.ds, other.ds])[rows],
            temporal=np.concatenate([self.temporal, other.temporal])[rows],
            available=joined(self.available, other.available),
            weight=joined(self.weight, other.weight),
            target=None if self.target is None or other.target is None
            else np.concatenate([self.target, other.target])[rows], _dates={})

    def locally_scaled(self, kind: str | None, static_kind: str | None, skip=()) -> Panel:
        """The panel with NeuralForecast's local scalers fit and applied (columns in
        `skip` left alone)."""
        if kind is None and static_kind is None:
            return self
        if kind is not None and self.available is not None and not self.available.all():
            raise ValueError(f"local_scaler_type={kind!r} with missing points (available_mask "
                             f"0) is not supported: the scalers would read them. Fill them, or "
                             f"use the per-window scaler_type, which skips them.")
        y, temporal, static, scaling = fit_transform(
            self.y, self.temporal, self.temporal_cols, self.static, self.static_cols,
            self.indptr, kind, static_kind, skip)
        return dataclasses.replace(self, y=y, temporal=temporal, static=static, scaling=scaling,
                                   _dates={})

    def unscaled_target(self, values: np.ndarray) -> np.ndarray:
        """Values (n_series, steps, ...) of the scaled target in the data's units."""
        return values if self.scaling is None else self.scaling.inverse_target(values)

    def uid_column(self, uids: np.ndarray):
        """An output frame's unique_id column: categorical when df's was (as NeuralForecast)."""
        return uids if self.uid_dtype is None else pd.Categorical(uids, dtype=self.uid_dtype)

    def future_frame(self, freq, h: int, test_size: int = 0) -> pd.DataFrame:
        """A new frame of (unique_id, ds) for the h steps after each series' end minus
        test_size, built from a cached one (predict answers with it every call): a
        shallow copy where pandas copies on write (3.x), else a deep one."""
        key = ("frame", freq, h, test_size)
        if key not in self._dates:
            self._dates[key] = pd.DataFrame({"unique_id": self.uid_column(np.repeat(self.uids, h)),
                                             "ds": self.future_dates(freq, h, test_size)})
        return self._dates[key].copy(deep=not _PANDAS_COPIES_ON_WRITE)

    def future_dates(self, freq, h: int, test_size: int = 0) -> np.ndarray:
        """The h timestamps after each series' end minus test_size (cached: predict
        calls it on every forecast)."""
        key = (freq, h, test_size)
        if key not in self._dates:
            self._dates[key] = future_dates(self.ds[self.indptr[1:] - 1 - test_size], freq, h)
        return self._dates[key]


_PANDAS_COPIES_ON_WRITE = int(pd.__version__.split(".")[0]) >= 3


def static_array(static_df, uids, cols: list[str], dtype) -> np.ndarray:
    if not cols:
        return np.zeros((len(uids), 0), dtype)
    if static_df is None:
        _fail(f"stat_exog_list {cols} needs static_df with unique_id and those columns; "
              f"pass fit(df, static_df=...).")
    missing = [c for c in ["unique_id", *cols] if c not in static_df.columns]
    if missing:
        _fail(f"static_df is missing column(s) {missing}; it has {list(static_df.columns)}.")
    table = static_df.drop_duplicates("unique_id").set_index("unique_id")
    absent = [u for u in uids if u not in table.index]
    if absent:
        _fail(f"static_df has no row for series {absent[:5]}; add one per series.")
    values = table.loc[uids, cols]
    for col in cols:
        if not pd.api.types.is_numeric_dtype(values[col]):
            _fail(f"static column {col!r} must be numeric, got dtype {values[col].dtype}.")
    array = values.to_numpy(dtype=dtype)
    if not np.isfinite(array).all():
        _fail(f"static_df has NaN or inf in {cols}; fill them first.")
    return array


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat rows starts[i] + [0, lengths[i]) one span after another, without a Python
    loop over the spans (20,000 series: 0.1 s as a loop)."""
    lengths = lengths.astype(np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lengths),
                                                               lengths)
