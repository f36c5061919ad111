"""Training windows: sampled by index, gathered at each step, scaled per window."""

from __future__ import annotations

import numpy as np

from ndwork.data.panel import Panel
from ndwork.kernels import kernel


class WindowSampler:
    """NeuralForecast's sampling: each step takes `batch_size` series (an epoch-wise
    shuffle of the series; the epoch's last, smaller batch is used unless drop_last,
    NeuralForecast's drop_last_loader), then `windows_batch_size` windows among theirs
    (without replacement when there are enough, with replacement otherwise).

    Windows start every `step_size` points; their input part lies inside the first
    `train_lengths[i]` points of series i and their horizon holds at least one of them,
    so the last h - 1 windows reach past the end, as NeuralForecast's right padding makes
    them (gather_windows masks the points past the end). Deterministic under `rng`.

    `multivariate=True` (models that mix series, on aligned series) samples time
    offsets instead and returns, for each, the window of every series at that offset:
    window-major, series-minor, windows_batch_size * n_series starts in all.
    """

    def __init__(self, panel: Panel, train_lengths: np.ndarray, input_size: int, h: int,
                 step_size: int, batch_size: int, windows_batch_size: int,
                 multivariate: bool = False, drop_last: bool = False):
        short = np.flatnonzero(train_lengths < input_size + 1)
        if len(short):
            ids = panel.uids[short[:5]].tolist()
            raise ValueError(
                f"series {ids} ({len(short)} in all) have fewer than input_size + 1 = "
                f"{input_size + 1} training points (after any validation/test holdout); drop "
                f"them, or use a smaller input_size.")
        self.starts = panel.indptr[:-1]
        self.counts = (train_lengths - 1 - input_size) // step_size + 1
        self.step_size = step_size
        self.batch_size = min(batch_size, panel.n_series)
        self.windows_batch_size = windows_batch_size
        self.multivariate, self.drop_last = multivariate, drop_last
        self._order = np.zeros(0, dtype=np.int64)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Absolute start rows (windows_batch_size,) into the panel's flat arrays."""
        if self.multivariate:
            count = int(self.counts.min())
            replace = count < self.windows_batch_size
            offsets = rng.choice(count, self.windows_batch_size, replace=replace)
            return (self.starts[None, :] + offsets[:, None] * self.step_size).reshape(-1)
        if len(self._order) == 0 or (self.drop_last and len(self._order) < self.batch_size):
            self._order = rng.permutation(len(self.counts))
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
        return self.starts[series[which]] + offset * self.step_size

    def state(self) -> np.ndarray:
        return self._order.copy()

    def set_state(self, order: np.ndarray) -> None:
        self._order = np.asarray(order, dtype=np.int64)


def gather_windows(panel: Panel, starts: np.ndarray, length: int,
                   series: np.ndarray | None = None) -> dict:
    """Windows of `length` points starting at absolute rows `starts` of `series` (by
    default the series each start lies in; a start before its series' first row pads
    the window on the left, NeuralForecast's start padding).

    Returns y (W, length), temporal (W, length, n_temporal), the series index (W,) and
    `available` (W, length): 1 inside the series, 0 before its start and past its end,
    where y and temporal are 0 (NeuralForecast's padding).
    """
    rows = starts[:, None] + np.arange(length)
    if series is None:
        series = np.searchsorted(panel.indptr, starts, side="right") - 1
    first, ends = panel.indptr[series][:, None], panel.indptr[series + 1][:, None]
    inside = (rows >= first) & (rows < ends)
    if inside.all():
        return {"y": panel.y[rows], "temporal": panel.temporal[rows], "series": series,
                "available": np.ones(rows.shape, panel.y.dtype)}
    rows = np.clip(rows, first, ends - 1)
    return {"y": np.where(inside, panel.y[rows], 0).astype(panel.y.dtype, copy=False),
            "temporal": np.where(inside[..., None], panel.temporal[rows], 0).astype(
                panel.y.dtype, copy=False),
            "series": series, "available": inside.astype(panel.y.dtype)}


def scale_windows(y: np.ndarray, temporal: np.ndarray, input_size: int, scaler_type: str,
                  mask: np.ndarray | None = None):
    """Scale each window by statistics of its input part (NeuralForecast's temporal norm),
    over the points `mask` (W, input_size) marks available (default: all).

    y (W, T), temporal (W, T, C). Returns the scaled arrays and y's (shift, scale),
    each (W,), which predict uses to map forecasts back.
    """
    mask = (np.ones((y.shape[0], input_size), dtype=y.dtype) if mask is None
            else np.ascontiguousarray(mask, dtype=y.dtype))
    stats = kernel("scaler_statistics")
    shift, scale = stats(scaler_type, np.ascontiguousarray(y[:, :input_size]), mask)
    if scaler_type == "identity":
        return y, temporal, shift, scale
    y_scaled = (y - shift[:, None]) / scale[:, None]
    if temporal.shape[2]:
        w, t, c = temporal.shape
        flat = np.ascontiguousarray(temporal[:, :input_size].transpose(0, 2, 1)).reshape(w * c, -1)
        t_mask = np.ascontiguousarray(np.repeat(mask, c, axis=0))  # (W * C, input_size)
        t_shift, t_scale = stats(scaler_type, flat, t_mask)
        temporal = ((temporal - t_shift.reshape(w, 1, c)) / t_scale.reshape(w, 1, c))
    return y_scaled, temporal.astype(y.dtype, copy=False), shift, scale
