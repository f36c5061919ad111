"""Training windows: sampled by index, gathered at each step, scaled per window."""

from __future__ import annotations

import warnings

import numpy as np

from ndwork.data.panel import Panel
from ndwork.kernels import kernel


class WindowSampler:
    """NeuralForecast's sampling: each step takes `batch_size` series (an epoch-wise
    shuffle of the series; the epoch's last, smaller batch is used unless drop_last,
    NeuralForecast's drop_last_loader), then `windows_batch_size` windows among theirs
    (without replacement when there are enough, with replacement otherwise).

    Windows start every `step_size` points, from the series' first point, or with
    `start_padding` (NeuralForecast's start_padding_enabled) input_size - 1 points
    before it; their input part ends inside the first `train_lengths[i]` points of
    series i, and a window is kept when at least `min_available` = (inputs, targets)
    of its points lie inside (NeuralForecast's training_data_availability_threshold;
    at least one each), so the last h - 1 windows reach past the end, as
    NeuralForecast's right padding makes them (gather_windows masks the points
    outside). Deterministic under `rng`.

    `multivariate=True` (models that mix series) samples time offsets instead and
    returns, for each, the window of every series at that offset: window-major,
    series-minor, windows_batch_size * n_series windows in all; in the data's series
    order, or with `shuffle_series` in a new random order each step (as NeuralForecast's
    loader presents them). As NeuralForecast, series of different lengths are aligned on
    their last point (the shorter ones padded on the left), and a window is kept when all
    series together hold `min_available` real points (the model counts it for all).
    """

    def __init__(self, panel: Panel, train_lengths: np.ndarray, input_size: int, h: int,
                 step_size: int, batch_size: int, windows_batch_size: int,
                 multivariate: bool = False, drop_last: bool = False,
                 start_padding: bool = False, min_available: tuple[int, int] = (1, 1),
                 shuffle_series: bool = False):
        first = -(input_size - 1) if start_padding else 0
        lengths = np.asarray(train_lengths, dtype=np.int64)
        n_series = len(lengths)
        if multivariate:  # common positions, each series aligned on its last point
            longest = int(lengths.max())
            positions = np.arange(first, longest - input_size + 1, step_size)
            series = np.repeat(np.arange(n_series), len(positions))
            starts = (positions[None, :] - (longest - lengths)[:, None]).reshape(-1)
        else:  # every series' starts from `first`, flat and series-major
            counts = np.maximum(0, -(-(lengths - input_size + 1 - first) // step_size))
            series = np.repeat(np.arange(n_series), counts)
            starts = first + step_size * (np.arange(counts.sum())
                                          - np.repeat(np.cumsum(counts) - counts, counts))
        observed = (np.ones(panel.indptr[-1]) if panel.available is None
                    else panel.available)
        seen = np.r_[0, np.cumsum(observed, dtype=np.float64)]  # real points before each row
        row0, n = panel.indptr[series], lengths[series]

        def real(a, b):  # real points of rows a:b of each window's series
            return seen[row0 + np.clip(b, 0, n)] - seen[row0 + np.clip(a, 0, n)]

        inputs = real(starts, starts + input_size)
        targets = real(starts + input_size, starts + input_size + h)
        if multivariate:  # the real points of all series count together
            inputs = np.tile(inputs.reshape(n_series, -1).sum(axis=0), n_series)
            targets = np.tile(targets.reshape(n_series, -1).sum(axis=0), n_series)
        keep = (inputs >= min_available[0]) & (targets >= min_available[1])
        local = starts[keep].astype(np.int64)
        self.counts = np.bincount(series[keep], minlength=n_series).astype(np.int64)
        _check_windows(panel, lengths, self.counts, input_size, start_padding or multivariate,
                       min_available)
        self.trained = np.flatnonzero(self.counts)  # the series the steps draw from
        self.local = local
        self.ptr = np.r_[0, np.cumsum(self.counts)]
        self.series_starts = panel.indptr[:-1]
        self.batch_size = min(batch_size, len(self.trained))
        self.windows_batch_size = windows_batch_size
        self.multivariate, self.drop_last = multivariate, drop_last
        self.shuffle_series = shuffle_series
        self._order = np.zeros(0, dtype=np.int64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Windows (windows_batch_size, 2): each one's absolute start row into the
        panel's flat arrays (before its series' first row when padded) and its series."""
        if self.multivariate:
            count = int(self.counts[0])  # the same windows for every series
            replace = count < self.windows_batch_size
            offsets = rng.choice(count, self.windows_batch_size, replace=replace)
            order = (rng.permutation(len(self.counts)) if self.shuffle_series
                     else np.arange(len(self.counts)))
            series = np.broadcast_to(order, (len(offsets), len(self.counts))).reshape(-1)
            return self._windows(np.repeat(offsets, len(self.counts)), series)
        if len(self._order) == 0 or (self.drop_last and len(self._order) < self.batch_size):
            self._order = rng.permutation(self.trained)  # arange's order when all train
        series, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        counts = self.counts[series]
        total = int(counts.sum())
        if total >= self.windows_batch_size:
            flat = rng.choice(total, self.windows_batch_size, replace=False)
        else:
            flat = rng.integers(0, total, self.windows_batch_size)
        ends = np.cumsum(counts)
        which = np.searchsorted(ends, flat, side="right")
        offset = flat - (ends[which] - counts[which])
        return self._windows(offset, series[which])

    def _windows(self, offset: np.ndarray, series: np.ndarray) -> np.ndarray:
        starts = self.series_starts[series] + self.local[self.ptr[series] + offset]
        return np.stack([starts, series], axis=1)

    def state(self) -> np.ndarray:
        return self._order.copy()

    def set_state(self, order: np.ndarray) -> None:
        self._order = np.asarray(order, dtype=np.int64)


def _check_windows(panel, lengths, counts, input_size, padded, min_available):
    """As NeuralForecast: without padding (start padding, or a multivariate model's
    alignment of the series on their last points) every series needs input_size
    training points (it forecasts from them); a series with no training window (exactly
    input_size points, or too few real ones) is forecast but not trained on, and says
    so; an error when no series has a window."""
    short = np.flatnonzero(lengths < input_size) if not padded else []
    if len(short):
        raise ValueError(
            f"series {panel.uids[short[:5]].tolist()} ({len(short)} in all) have fewer "
            f"training points than input_size={input_size} (the shortest "
            f"{lengths[short].min()}, after any validation/test holdout); drop them, or use "
            f"a smaller input_size, or set start_padding_enabled=True.")
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        ids = panel.uids[empty[:5]].tolist()
        needs = (f"{min_available[0]} real inputs and {min_available[1]} real targets "
                 f"(training_data_availability_threshold)" if padded
                 else f"input_size + 1 = {input_size + 1} training points")
        if len(empty) == len(counts):
            fix = ("lower training_data_availability_threshold" if padded
                   else "use a smaller input_size, or set start_padding_enabled=True")
            raise ValueError(f"no series has a training window: a window needs {needs}, "
                             f"series {ids} have {lengths[empty[:5]].tolist()} points (after "
                             f"any validation/test holdout); {fix}.")
        warnings.warn(f"series {ids} ({len(empty)} in all) have no training window (a "
                      f"window needs {needs}): they are forecast, not trained on.",
                      stacklevel=3)


def gather_windows(panel: Panel, starts: np.ndarray, length: int,
                   series: np.ndarray | None = None) -> dict:
    """Windows of `length` points starting at absolute rows `starts` of `series` (by
    default the series each start lies in; a start before its series' first row pads
    the window on the left, NeuralForecast's start padding).

    Returns y (W, length), temporal (W, length, n_temporal), the series index (W,) and
    `available` (W, length): 1 inside the series, 0 before its start, past its end and
    where available_mask marks a point missing, where y and temporal are 0
    (NeuralForecast's padding); with sample_weight, `weight` (W, length) too.
    """
    rows = starts[:, None] + np.arange(length)
    if series is None:
        series = np.searchsorted(panel.indptr, starts, side="right") - 1
    first, ends = panel.indptr[series][:, None], panel.indptr[series + 1][:, None]
    inside = (rows >= first) & (rows < ends)
    out = {"series": series}
    if inside.all():
        out.update(y=panel.y[rows], temporal=panel.temporal[rows],
                   available=np.ones(rows.shape, panel.y.dtype))
    else:
        rows = np.clip(rows, first, ends - 1)
        out.update(y=np.where(inside, panel.y[rows], 0).astype(panel.y.dtype, copy=False),
                   temporal=np.where(inside[..., None], panel.temporal[rows], 0).astype(
                       panel.y.dtype, copy=False),
                   available=inside.astype(panel.y.dtype))
    if panel.available is not None:  # missing points (their values are zeros already)
        out["available"] = out["available"] * panel.available[rows]
    if panel.weight is not None:
        out["weight"] = np.where(inside, panel.weight[rows], 0).astype(panel.y.dtype)
    return out


# NeuralForecast's per-window scalers: the statistics each one takes
WINDOW_SCALERS = {"identity": "identity", "standard": "standard", "robust": "robust",
                  "minmax": "minmax", "minmax1": "minmax", "invariant": "robust",
                  "revin": "standard"}


def scale_windows(y: np.ndarray, temporal: np.ndarray, input_size: int, scaler_type: str,
                  mask: np.ndarray | None = None):
    """Scale each window by statistics of its input part (NeuralForecast's temporal norm),
    over the points `mask` (W, input_size) marks available (default: all).

    y (W, T), temporal (W, T, C). Returns the scaled arrays and y's (shift, scale),
    each (W,), which predict uses to map forecasts back: forecast = raw * scale + shift,
    after sinh for "invariant" (which scales as arcsinh((x - median) / mad)); "minmax1"
    maps the inputs' range onto [-1, 1]; "revin" scales as "standard" (its learnable
    shift and scale act on the forecasts, in the trainer).
    """
    mask = (np.ones((y.shape[0], input_size), dtype=y.dtype) if mask is None
            else np.ascontiguousarray(mask, dtype=y.dtype))
    if scaler_type == "identity":
        return y, temporal, np.zeros(len(y), y.dtype), np.ones(len(y), y.dtype)

    def statistics(x, m):
        shift, scale = kernel("scaler_statistics")(WINDOW_SCALERS[scaler_type], x, m)
        if scaler_type == "minmax1":  # 2 (x - min) / range - 1
            shift, scale = shift + scale / 2, scale / 2
        return shift, scale

    def scaled(x, shift, scale):
        z = (x - shift) / scale
        return np.arcsinh(z) if scaler_type == "invariant" else z

    shift, scale = statistics(np.ascontiguousarray(y[:, :input_size]), mask)
    y_scaled = scaled(y, shift[:, None], scale[:, None])
    if temporal.shape[2]:
        w, t, c = temporal.shape
        flat = np.ascontiguousarray(temporal[:, :input_size].transpose(0, 2, 1)).reshape(w * c, -1)
        t_mask = np.ascontiguousarray(np.repeat(mask, c, axis=0))  # (W * C, input_size)
        t_shift, t_scale = statistics(flat, t_mask)
        temporal = scaled(temporal, t_shift.reshape(w, 1, c), t_scale.reshape(w, 1, c))
    return y_scaled.astype(y.dtype, copy=False), temporal.astype(y.dtype, copy=False), shift, scale
