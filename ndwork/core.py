"""The NeuralForecast-style front: fit, predict, cross_validation, save and load."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from ndwork import __version__
from ndwork.config import kernel_blas_single_threaded
from ndwork.data import Panel, gather_windows, validate_frame
from ndwork.data.categorical import build_vocabulary, encode
from ndwork.data.frames import is_polars, to_pandas, to_polars
from ndwork.data.local_scalers import LocalScaling, check_scaler_type
from ndwork.kernels.gemm import quiet_numpy_blas
from ndwork.losses import HuberQLoss, QuantileLoss
from ndwork.models import HINT, MODELS, WRAPPERS, BaseModel, model_class
from ndwork.models.base import NO_DATA_LOADER
from ndwork.models.rnn import Recursive
from ndwork.training import checkpoint
from ndwork.training.optimizers import Optimizer
from ndwork.training.trainer import (
    TrainingDiverged,
    TrainState,
    build_batch,
    check_series,
    inference_weights,
    initial_state,
    predict_windows,
    train,
    trajectories,
)
from ndwork.utils import PredictionIntervals, Request, conformal_quantiles


class NeuralForecast:
    """Fit and forecast several models on a long-format panel (unique_id, ds, y).

    models: ndwork models. freq: pandas frequency string for datetime `ds`, or an
    integer step for integer `ds`. local_scaler_type: scale each series' target and
    exogenous columns before windowing, forecasts mapped back ("standard", "robust",
    "robust-iqr", "minmax", "boxcox"; NeuralForecast's, fit on the data given to fit,
    cross_validation or predict(df=...)). local_static_scaler_type: the same for the
    static columns, across series.
    """

    def __init__(self, models: Sequence[BaseModel], freq: str | int,
                 local_scaler_type: str | None = None,
                 local_static_scaler_type: str | None = None):
        models = list(models)
        if not models or not all(isinstance(m, BaseModel | HINT) for m in models):
            raise ValueError("models must be a non-empty list of ndwork models, e.g. [NHITS(...)].")
        if local_scaler_type and any(isinstance(m, HINT) for m in models):
            raise ValueError("HINT reconciles forecasts in the data's own units (sums of "
                             "series); leave local_scaler_type out and scale per window with "
                             "the model's scaler_type instead.")
        names = [repr(m) for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names {names} repeat; give each an alias=.")
        check_scaler_type("local_scaler_type", local_scaler_type)
        check_scaler_type("local_static_scaler_type", local_static_scaler_type)
        self.models, self.freq = models, freq
        self.local_scaler_type = local_scaler_type
        self.local_static_scaler_type = local_static_scaler_type
        # the codes of the categorical exogenous values, set by the first fresh fit
        self.categorical_vocabulary: dict | None = None
        self.panel: Panel | None = None
        # the points at the end of each series the last training held out (a
        # cross-validation's test windows): predict_insample leaves them out, as NeuralForecast
        self.test_size = 0
        self.dashboard_link: str | None = None  # set by a distributed fit
        self.bytes_per_sync = 0  # of the last distributed fit: bytes per round and worker
        self.worker_switches: dict | None = None  # the Optimizations its workers ran under
        self.states: list[TrainState | None] = [None] * len(models)
        # conformal calibration of the point models: intervals, series, {name: errors}
        self.calibration: dict | None = None

    # --- columns the models need ---------------------------------------------------
    @property
    def _temporal_cols(self) -> list[str]:
        return list(dict.fromkeys(c for m in self.models
                                  for c in m.futr_exog_list + m.hist_exog_list))

    @property
    def _futr_cols(self) -> list[str]:
        return list(dict.fromkeys(c for m in self.models for c in m.futr_exog_list))

    @property
    def _static_cols(self) -> list[str]:
        return list(dict.fromkeys(c for m in self.models for c in m.stat_exog_list))

    @property
    def _cardinalities(self) -> dict[str, int]:
        """The categorical columns and the fewest categories a model declares for each."""
        cards: dict[str, int] = {}
        for m in self.models:
            for col in m.cat_exog_list:
                cards[col] = min(cards.get(col, m.categorical_cardinalities[col]),
                                 m.categorical_cardinalities[col])
        return cards

    def _panel(self, df, static_df) -> Panel:
        if self._cardinalities and self.categorical_vocabulary is None:
            self.categorical_vocabulary = build_vocabulary(self._cardinalities, df, static_df)
        df, static_df = self._encoded(df), self._encoded(static_df)
        panel = Panel.from_frame(df, self.freq, self._temporal_cols, static_df, self._static_cols)
        return panel.locally_scaled(self.local_scaler_type, self.local_static_scaler_type,
                                    skip=list(self._cardinalities))

    def _encoded(self, frame):
        """frame with its categorical columns coded (unseen values as 0)."""
        return encode(frame, self.categorical_vocabulary or {})

    def _like(self, models) -> NeuralForecast:
        """A NeuralForecast of `models` with this one's settings."""
        nf = NeuralForecast(models, self.freq, self.local_scaler_type,
                            self.local_static_scaler_type)
        nf.categorical_vocabulary = self.categorical_vocabulary
        return nf

    # --- fit / predict ---------------------------------------------------------------
    def fit(self, df: pd.DataFrame | None = None, static_df: pd.DataFrame | None = None,
            val_size: int = 0, warm_start: bool | None = None, verbose: bool = True,
            callback: Callable | None = None, distributed=None, sync_every: int = 1,
            checkpoint_every: int | None = None, checkpoint_path: str | os.PathLike | None = None,
            resume_from: str | os.PathLike | None = None,
            prediction_intervals: PredictionIntervals | None = None,
            use_init_models: bool = False, id_col: str = "unique_id", time_col: str = "ds",
            target_col: str = "y", val_df: pd.DataFrame | None = None,
            distributed_config=None) -> NeuralForecast:
        """Train every model on df.

        val_size: points held out at the end of each series for validation and early
        stopping. val_df: validation data as its own frame instead (NeuralForecast's: the
        same series as df, as many points each, appended to them, so predict forecasts
        after val_df's end; its timestamps need not continue df's). Re-fitting continues
        from the fitted weights, as NeuralForecast does, unless use_init_models=True
        (fresh initial weights); warm_start=True / False says the same explicitly
        (continue / start again) and wins over use_init_models; continuing keeps the
        optimizer's moments and restarts the step budget and the learning-rate schedule.
        callback(step, train_loss, valid_loss) runs after every step; returning True stops
        that model at the step boundary. id_col, time_col, target_col: df's column names
        (NeuralForecast's), kept for predict's output.

        distributed: train on dask: True (a LocalCluster, one worker per core), a number
        of workers, a dask.distributed.Client or a scheduler address. sync_every: steps
        between synchronizations (1: gradients averaged every step, equal to training
        in one process; K > 1: K local steps per worker, then parameters averaged).
        checkpoint_every / checkpoint_path: save a checkpoint every N steps.
        resume_from: continue an interrupted fit from a checkpoint of these models (on
        df, or on the data the checkpoint holds when df is None).
        prediction_intervals: calibrate conformal intervals for the point models by
        cross-validation on df's last windows (ndwork.utils.PredictionIntervals); then
        predict(level=...) gives every model intervals. distributed_config (NeuralForecast's
        Spark training) is refused with a pointer to `distributed`.
        """
        _neuralforecast_only("fit", distributed_config=distributed_config)
        if not isinstance(sync_every, int) or sync_every < 1:
            raise ValueError(f"sync_every={sync_every!r} must be a positive integer.")
        if (checkpoint_every is None) != (checkpoint_path is None):
            raise ValueError("checkpoint_every and checkpoint_path go together.")
        fitted = all(s is not None for s in self.states)
        if warm_start is None:  # NeuralForecast: a fitted model trains on from its weights
            warm_start = fitted and not use_init_models
        if resume_from is not None:
            self._resume_states(resume_from)
        elif warm_start and not fitted:
            raise ValueError("warm_start=True needs a fitted model; call fit once without it.")
        if df is None:
            if self.panel is None:
                raise ValueError("fit needs df (long format: unique_id, ds, y).")
            panel = self.panel
        else:
            self.id_col, self.time_col, self.target_col = id_col, time_col, target_col
            self.polars_frames = is_polars(df)
            if not warm_start and resume_from is None:  # fresh weights: categories afresh
                self.categorical_vocabulary = None
            panel = self._panel(self._standard(df, "df", target=True), self._standard(static_df))
        if val_df is not None:
            panel, val_size = self._with_validation(panel, val_df, val_size)
        keep = "resume" if resume_from is not None else ("restart" if warm_start else False)
        calibration = None
        if prediction_intervals is not None:
            calibration = self._calibrate(panel, prediction_intervals, val_size, verbose,
                                          distributed)
        self._fit_panel(panel, val_size, 0, keep, verbose, callback, distributed, sync_every,
                        checkpoint_every, checkpoint_path)
        self.calibration = calibration
        return self

    def _with_validation(self, panel: Panel, val_df, val_size: int) -> tuple[Panel, int]:
        """The panel with val_df appended to its series, and the validation size."""
        if val_size:
            raise ValueError(f"val_df and val_size={val_size} cannot be set together (as in "
                             f"NeuralForecast); leave val_size at 0 with val_df.")
        val = Panel.from_frame(self._encoded(self._standard(val_df, "val_df", target=True)),
                               self.freq,
                               panel.temporal_cols, dtype=panel.y.dtype)
        lengths = np.unique(val.lengths)
        if len(lengths) > 1:
            raise ValueError(f"every series of val_df must have the same length (as in "
                             f"NeuralForecast); they range from {lengths[0]} to {lengths[-1]}.")
        return panel.append(dataclasses.replace(val, static=panel.static,
                                                static_cols=panel.static_cols)), int(lengths[0])

    def _calibrate(self, panel: Panel, intervals: PredictionIntervals, val_size: int,
                   verbose: bool, parallel=None) -> dict:
        """Absolute errors of fresh copies of the point models over the last
        intervals.n_windows horizons of each series (NeuralForecast's conformity scores)."""
        if not isinstance(intervals, PredictionIntervals):
            raise ValueError(f"prediction_intervals must be a PredictionIntervals(...), got "
                             f"{intervals!r}.")
        point = [m for m in self.models if _point_forecast(m.loss)]  # the others have theirs
        if not point:
            return {"intervals": intervals, "uids": panel.uids, "scores": {}}
        h = max(m.h for m in point)
        span = h + intervals.step_size * (intervals.n_windows - 1)
        needed = span + val_size + max(m.windows("train")[0] + 1 for m in point)
        if panel.lengths.min() < needed:
            raise ValueError(f"conformal calibration over {intervals.n_windows} windows of h={h} "
                             f"needs at least {needed} points per series, the shortest has "
                             f"{panel.lengths.min()}; lower n_windows or step_size, or drop the "
                             f"short series.")
        folds = self._like(copy.deepcopy(point))._cross_validation_panel(
            panel, intervals.n_windows, intervals.step_size, val_size, False, verbose, parallel)
        scores = {}
        for model in point:
            errors = np.abs(folds[repr(model)].to_numpy() - folds["y"].to_numpy())
            scores[repr(model)] = errors.reshape(panel.n_series, intervals.n_windows, h)
        return {"intervals": intervals, "uids": panel.uids, "scores": scores}

    def _resume_states(self, path) -> None:
        saved = NeuralForecast.load(path)
        mine = [(type(m).__name__, m.hyperparameters()) for m in self.models]
        theirs = [(type(m).__name__, m.hyperparameters()) for m in saved.models]
        if json.loads(json.dumps(mine)) != json.loads(json.dumps(theirs)):
            raise checkpoint.CheckpointError(f"checkpoint {path} holds other models or "
                                             f"hyper-parameters than this NeuralForecast.")
        self.states = saved.states
        self.categorical_vocabulary = saved.categorical_vocabulary
        self.panel = self.panel or saved.panel  # fit(resume_from=path) alone uses its data

    def _fit_panel(self, panel, val_size, test_size, keep_states, verbose, callback=None,
                   distributed=None, sync_every=1, checkpoint_every=None, checkpoint_path=None):
        """Train each model on a copy of its state and keep the copy only if its training
        completed: a model whose fit failed keeps its previous state (unfitted if it had
        none). A diverged model keeps its last finite state, marked `diverged`.
        keep_states: False (fresh weights), "restart" (a new fit from the current
        weights) or "resume" (continue the interrupted fit the states hold)."""
        for model in self.models:
            if model.loss.is_distribution_output:
                model.loss.check_targets(panel.y)
        previous = self.panel, self.test_size
        self.panel, self.test_size = panel, test_size  # checkpoints taken during the fit
        states = ([copy.deepcopy(s) for s in self.states] if keep_states
                  else [initial_state(m) for m in self.models])
        if keep_states == "restart":  # a new fit from the fitted weights (on the copies:
            for state in states:      # a fit that fails leaves the previous one as it was)
                state.restart()
        if checkpoint_every:
            callback = self._checkpointing(callback, checkpoint_every, checkpoint_path, states)
        trained = False
        with contextlib.ExitStack() as stack:
            stack.enter_context(kernel_blas_single_threaded())
            stack.enter_context(quiet_numpy_blas())
            backend, note = None, ""
            if distributed is not None:
                from ndwork.distributed import DaskSteps, connect

                client = stack.enter_context(connect(distributed))
                backend = DaskSteps(client)
                self.dashboard_link = client.dashboard_link
                note = f" on {backend.ranks} dask workers"
                if client.dashboard_link:
                    note += f" (dashboard {client.dashboard_link})"
            try:
                for i, (model, state) in enumerate(zip(self.models, states, strict=True)):
                    try:
                        with model.precision_scope():
                            train(model, panel, val_size, test_size, state, verbose, callback,
                                  backend, sync_every, note)
                    except TrainingDiverged as e:
                        state.diverged = str(e)  # the last finite state, reported as such
                        self.states[i], e.state = state, state
                        trained = True
                        raise
                    self.states[i], trained = state, True
            finally:
                if not trained:  # no model holds a state from this data
                    self.panel, self.test_size = previous
            if backend is not None:
                self.bytes_per_sync = backend.bytes_per_sync
                self.worker_switches = backend.worker_switches

    def _checkpointing(self, callback, every, path, states):
        """Save `states`, the fit in progress, every `every` steps."""
        def save_then_call(step, loss, valid):
            if step % every == 0:
                self._save(path, states, overwrite=True)
            return callback(step, loss, valid) if callback is not None else None

        return save_then_call

    def _check_fitted(self):
        unfitted = [repr(m) for m, s in zip(self.models, self.states, strict=True) if s is None]
        if unfitted:
            raise ValueError(f"models {unfitted} are not fitted (never trained, or their fit "
                             f"did not complete); call fit(df) before predict or save.")

    def _warn_diverged(self):
        for model, state in zip(self.models, self.states, strict=True):
            if state.diverged:
                warnings.warn(f"{model!r} diverged in its last fit; it forecasts with the "
                              f"parameters of its last finite step ({state.diverged})",
                              RuntimeWarning, stacklevel=3)

    def predict(self, df: pd.DataFrame | None = None, static_df: pd.DataFrame | None = None,
                futr_df: pd.DataFrame | None = None, parallel=None, level: list | None = None,
                quantiles: list[float] | None = None, h: int | None = None,
                verbose: bool = False, engine=None, **data_kwargs) -> pd.DataFrame:
        """Forecast h steps after the end of each series of df (default: the fit data).

        futr_df holds the future exogenous values (unique_id, ds, futr_exog_list) for
        the h timestamps after each series. Returns unique_id, ds and one column per
        model, plus its interval columns: MQLoss's and a distribution's own, or those
        `level` (e.g. [80, 90]: -lo-90, ..., -hi-90) or `quantiles` ask for, sampled from
        a distribution or, for a point model, from the conformal calibration fit(...,
        prediction_intervals=...) made. parallel: None, "threads" or dask (True, n,
        Client, address) forecasts chunks of the series in parallel (batch inference).
        h: more steps than the models' horizon, as NeuralForecast: recursive models
        decode them, direct ones forecast their h at a time from their own median (or
        point) forecasts; not with conformal intervals or historic exogenous inputs.
        NeuralForecast's verbose (predict prints nothing either way), engine (Spark) and
        data loader options (**data_kwargs) are accepted, as `_neuralforecast_only` says.
        """
        _neuralforecast_only("predict", engine=engine, data_kwargs=data_kwargs)
        self._check_fitted()
        self._warn_diverged()
        horizon = self._predict_horizon(h, level is not None or quantiles is not None)
        request = None if level is None and quantiles is None else Request(level, quantiles)
        polars = self._answers_in_polars(df)
        df, static_df = self._standard(df, "df", target=True), self._standard(static_df)
        futr_df = self._standard(futr_df, "futr_df")
        panel = self._stored_panel() if df is None else self._panel(df, static_df)
        if df is None and static_df is not None:
            panel = dataclasses.replace(panel, static=self._panel_static(panel, static_df), _dates={})
        if parallel is None or any(m.MULTIVARIATE for m in self.models) or horizon:
            futr = self._future_exog(panel, 0, horizon or self._horizon(), futr_df)
            return self._named(self._forecast_frame(panel, 0, futr, request, horizon), polars)
        from ndwork.distributed.pool import executor

        with executor(parallel) as pool:
            chunks = np.array_split(np.arange(panel.n_series), pool.n_workers)
            items = [(self._without_data(), panel.subset(c), futr_df, request)
                     for c in chunks if len(c)]
            parts = pool.map(_forecast_chunk, items)  # chunks in series order
        out = panel.future_frame(self.freq, self._horizon())
        for name in parts[0]:
            out.insert(len(out.columns), name, np.concatenate([part[name] for part in parts]))
        return self._named(out, polars)

    def predict_insample(self, step_size: int = 1, level: list | None = None,
                         quantiles: list[float] | None = None) -> pd.DataFrame:
        """Forecasts of the fit data's own history, as NeuralForecast's predict_insample:
        for each series, windows of h steps every step_size points ending at its last
        point (the first ones read zero-padded inputs, masked out of the scalers); after
        a cross_validation without refit, of the data before its windows (what the
        models were trained on). Returns unique_id, ds, cutoff (the step before each
        window), the model columns and y."""
        self._check_fitted()
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"predict_insample(step_size={step_size!r}) must be a positive "
                             f"integer.")
        multivariate = [repr(m) for m in self.models if m.MULTIVARIATE]
        if multivariate:
            raise ValueError(f"predict_insample does not forecast multivariate models "
                             f"{multivariate} (as in NeuralForecast); use cross_validation.")
        request = None if level is None and quantiles is None else Request(level, quantiles)
        if request and self.calibration and self.calibration["scores"]:
            raise ValueError("predict_insample cannot give conformal intervals (as in "
                             "NeuralForecast); leave level and quantiles out.")
        panel, h = self._stored_panel(), self._horizon()
        if self.test_size:  # after cross_validation: the data the models were trained on
            panel = panel.head(panel.lengths - self.test_size)
        short = np.flatnonzero(panel.lengths < h)
        if len(short):
            held_out = f" once the {self.test_size} cross-validated points are left out"
            raise ValueError(f"series {panel.uids[short[:5]].tolist()} are shorter than "
                             f"h={h}{held_out if self.test_size else ''}: they hold no "
                             f"in-sample window.")
        # window k of series i forecasts rows first[i] + offset[i] + k * step_size + [0, h)
        offset = (panel.lengths - h) % step_size
        counts = (panel.lengths - offset - h) // step_size + 1
        series = np.repeat(np.arange(panel.n_series), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        firsts = panel.indptr[series] + offset[series] + k * step_size
        rows = firsts[:, None] + np.arange(h)
        out = {"unique_id": panel.uid_column(panel.uids[series].repeat(h)),
               "ds": panel.ds[rows].reshape(-1),
               "cutoff": self._step_before(panel.ds[firsts]).repeat(h)}
        scaling = panel.scaling and panel.scaling.subset(series)
        for model, state in zip(self.models, self.states, strict=True):
            L = model.windows("predict")[0]
            w = gather_windows(panel, firsts - L, L + h, series)
            w["y"][:, L:] = 0  # the future is not an input
            batch, shift, scale = build_batch(model, w["y"], w["temporal"], panel.temporal_cols,
                                              panel.static[series], panel.static_cols, L,
                                              w["available"])
            sampled = model.loss.is_distribution_output or model.loss.quantile_input
            with model.precision_scope():
                y_hat = predict_windows(model, inference_weights(state), batch, shift, scale, state.buffers,
                                        quantiles=request.quantiles if request and sampled
                                        else None)
            if scaling is not None:
                y_hat = scaling.inverse_target(y_hat)
            y_hat, names = self._columns(model, y_hat, request, panel)
            for j, name in enumerate(names):
                out[f"{model!r}{name}"] = y_hat[:, :, j].reshape(-1)
        out["y"] = self._observed_y(panel, rows, scaling)
        return self._named(pd.DataFrame(out), self.polars_frames)

    @staticmethod
    def _observed_y(panel: Panel, rows: np.ndarray, scaling=None) -> np.ndarray:
        """The target at `rows` (S, steps) in the data's units, flat, NaN where missing."""
        y = panel.y[rows]
        y = panel.unscaled_target(y) if scaling is None else scaling.inverse_target(y)
        if panel.available is not None:
            y = np.where(panel.available[rows] > 0, y, np.nan)
        return y.reshape(-1)

    def _stored_panel(self) -> Panel:
        if self.panel is None:
            raise ValueError("this NeuralForecast holds no data (it was saved with "
                             "save_dataset=False); pass df= with the series to forecast.")
        return self.panel

    def explain(self, horizons: list[int] | None = None, outputs: list[int] | None = None,
                series: list[int] | None = None, explainer: str = "IntegratedGradients",
                df: pd.DataFrame | None = None, static_df: pd.DataFrame | None = None,
                futr_df: pd.DataFrame | None = None, verbose: bool = True):
        """NeuralForecast's explain: (predict's frame, {model: attributions}) for the
        point and quantile models (distribution ones are skipped, as in NeuralForecast).

        Attributions (ndwork.explain says how they are computed) per window, forecast
        step in `horizons` (default all) and output in `outputs` (default [0]), in
        NeuralForecast's layout: "insample" (W, H, 1, O, input_size, 2: the lags, then
        the availability mask, which ndwork's models read as a constant: 0),
        "futr_exog" (W, H, 1, O, F, input_size + h), "hist_exog" (W, H, 1, O, X,
        input_size), "stat_exog" (W, H, 1, O, S) (None without them) and
        "baseline_predictions" (W, H, 1, O). explainer: "IntegratedGradients" or
        "InputXGradient". series: NeuralForecast's option for multivariate models, which
        ndwork does not explain yet."""
        from ndwork.explain import EXPLAINERS, attributions

        if explainer not in EXPLAINERS:
            raise ValueError(f"explainer={explainer!r} is not built in ndwork; use one of "
                             f"{list(EXPLAINERS)} (ShapleyValueSampling is not available).")
        self._check_fitted()
        h = self._horizon()
        horizons = list(range(h)) if horizons is None else list(horizons)
        outputs = [0] if outputs is None else list(outputs)
        if not horizons or any(not 0 <= t < h for t in horizons):
            raise ValueError(f"horizons={horizons} must be steps in {list(range(h))}.")
        chosen = []
        for model, state in zip(self.models, self.states, strict=True):
            reason = ("a distribution loss" if model.loss.is_distribution_output else
                      "a multivariate model" if model.MULTIVARIATE else
                      "IntegratedGradients through its recurrent decoding"
                      if _recursive(model)
                      and explainer == "IntegratedGradients" else None)
            if reason:
                if verbose:
                    warnings.warn(f"explain skips {model!r}: {reason} is not explained (as "
                                  f"in NeuralForecast).", UserWarning, stacklevel=2)
                continue
            if any(not 0 <= o < model.loss.outputsize_multiplier for o in outputs):
                raise ValueError(f"outputs={outputs} must be among {model!r}'s "
                                 f"{model.loss.outputsize_multiplier} outputs.")
            chosen.append((model, state))
        if not chosen:
            raise ValueError("no model here can be explained (distribution losses, "
                             "multivariate models and recurrent IntegratedGradients are not).")
        forecasts = self.predict(df=df, static_df=static_df, futr_df=futr_df)
        df, static_df = self._standard(df, "df", target=True), self._standard(static_df)
        panel = self._stored_panel() if df is None else self._panel(df, static_df)
        futr = self._future_exog(panel, 0, h, self._standard(futr_df, "futr_df"))
        last_rows = panel.indptr[1:] - 1
        explanations = {}
        for model, state in chosen:
            batch, shift, scale = self._forecast_batch(model, panel, last_rows, futr)
            with model.precision_scope():
                parts = attributions(model, state.params, batch, shift, scale, horizons,
                                     outputs, explainer, state.buffers)
            explanations[repr(model)] = _neuralforecast_layout(parts)
        return forecasts, explanations

    def _step_before(self, ds: np.ndarray) -> np.ndarray:
        """The timestamps one step of freq before `ds`."""
        if isinstance(self.freq, int):
            return ds - self.freq
        return (pd.DatetimeIndex(ds) - to_offset(self.freq)).to_numpy()

    def _predict_horizon(self, h, intervals: bool, method: str = "predict") -> int | None:
        """predict(h=...) checked as NeuralForecast checks it; None: the models' own."""
        if h is None or h == self._horizon():
            return None
        if isinstance(h, bool) or not isinstance(h, int | np.integer) or h < self._horizon():
            raise ValueError(f"{method}(h={h!r}): h must be an integer of at least the models' "
                             f"horizon {self._horizon()} (as in NeuralForecast); leave it out "
                             f"for {self._horizon()} steps.")
        if intervals and self.calibration and self.calibration["scores"]:
            raise ValueError(f"predict(h={h}) beyond the horizon {self._horizon()} cannot give "
                             f"conformal intervals (calibrated for {self._horizon()} steps, as "
                             f"in NeuralForecast); drop level/quantiles or h.")
        hist = [repr(m) for m in self.models if m.hist_exog_list]
        if hist:
            raise ValueError(f"{method}(h={h}) beyond the horizon needs historic exogenous "
                             f"values that do not exist yet for {hist} (as in NeuralForecast).")
        return int(h)

    # --- the user's column names (NeuralForecast's id_col, time_col, target_col) -----
    id_col, time_col, target_col = "unique_id", "ds", "y"

    polars_frames = False  # the data of the last fit or cross_validation was a polars frame

    def _answers_in_polars(self, df) -> bool:
        """Outputs are polars frames when df is one, or with df=None when the fit's was."""
        return is_polars(df) if df is not None else self.polars_frames

    def _standard(self, frame, name: str = "static_df", target: bool = False):
        """frame as pandas with the user's column names renamed to unique_id, ds, y."""
        if frame is None:
            return None
        frame = to_pandas(frame)
        names = {self.id_col: "unique_id", self.time_col: "ds"}
        if target:
            names[self.target_col] = "y"
        names = {k: v for k, v in names.items() if k != v}
        if not names or not isinstance(frame, pd.DataFrame):
            return frame
        missing = [k for k in names if k not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing} (id_col={self.id_col!r}, "
                             f"time_col={self.time_col!r}, target_col={self.target_col!r} "
                             f"from fit); it has {list(frame.columns)}.")
        return frame.rename(columns=names)

    def _named(self, frame: pd.DataFrame, polars: bool = False):
        """An output frame with the user's column names, as polars when `polars`."""
        names = {"unique_id": self.id_col, "ds": self.time_col, "y": self.target_col}
        renamed = {k: v for k, v in names.items() if k != v}
        if renamed:  # (rename copies the frame even with nothing to rename)
            frame = frame.rename(columns=renamed)
        return to_polars(frame) if polars else frame

    def make_future_dataframe(self, df: pd.DataFrame | None = None,
                              h: int | None = None) -> pd.DataFrame:
        """The (id, time) rows futr_df must cover: the h steps (default: the models')
        after each series of df (default: the fit data), as NeuralForecast's."""
        panel = self._future_panel(df)
        h = self._horizon() if h is None else h
        return self._named(pd.DataFrame({"unique_id": panel.uid_column(np.repeat(panel.uids, h)),
                                         "ds": panel.future_dates(self.freq, h, 0)}),
                           self._answers_in_polars(df))

    def get_missing_future(self, futr_df: pd.DataFrame, df: pd.DataFrame | None = None,
                           h: int | None = None) -> pd.DataFrame:
        """The rows of make_future_dataframe(df, h) that futr_df lacks."""
        expected = to_pandas(self.make_future_dataframe(df, h))
        keys = [self.id_col, self.time_col]
        merged = expected.merge(to_pandas(futr_df)[keys], on=keys, how="left", indicator=True)
        missing = merged.loc[merged["_merge"] == "left_only", keys].reset_index(drop=True)
        return to_polars(missing) if is_polars(futr_df) else missing

    def _future_panel(self, df):
        if df is None:
            if self.panel is None:
                raise ValueError("make_future_dataframe needs df, or a fitted NeuralForecast.")
            return self.panel
        df = self._standard(df, "df")
        return Panel.from_frame(df.assign(y=0.0) if "y" not in df else df, self.freq)

    def _panel_static(self, panel, static_df):
        from ndwork.data.panel import static_array

        static = static_array(self._encoded(static_df), panel.uids, self._static_cols,
                              panel.y.dtype)
        if panel.scaling is not None:
            static = panel.scaling.transform_static(static, self._static_cols)
        return static

    def _horizon(self) -> int:
        return max(m.h for m in self.models)

    def _forecast_frame(self, panel: Panel, test_size: int, futr,
                        request: Request | None = None, horizon: int | None = None) -> pd.DataFrame:
        """Each model's forecast of the `horizon` (default: the models') steps after each
        series' end minus test_size, in the data's units; futr: _future_exog's."""
        out = panel.future_frame(self.freq, horizon or self._horizon(), test_size)
        for name, values in self._forecast_columns(panel, test_size, futr, request,
                                                   horizon).items():
            out.insert(len(out.columns), name, values)
        return out

    def _forecast_columns(self, panel: Panel, test_size: int, futr,
                          request: Request | None = None, horizon: int | None = None) -> dict:
        """_forecast_frame's forecast columns, as arrays by name (what a batch-inference
        task sends back: the driver builds the frame once)."""
        h = horizon or self._horizon()
        last_rows = panel.indptr[1:] - 1 - test_size
        unpadded = [m.windows("predict")[0] for m in self.models  # (multivariate ones pad)
                    if not (m.start_padding_enabled or m.MULTIVARIATE)]
        needed = max(unpadded, default=1)
        short = np.flatnonzero(last_rows + 1 - panel.indptr[:-1] < needed)
        if len(short):
            raise ValueError(f"series {panel.uids[short[:5]].tolist()} have fewer than the "
                             f"{needed} points a forecast reads (input_size; for recurrent=True "
                             f"models inference_input_size + 1); they cannot be forecast: drop "
                             f"them, use a smaller input size, or train with "
                             f"start_padding_enabled=True (inputs padded with zeros).")
        columns = {}
        for model, state in zip(self.models, self.states, strict=True):
            sampled = model.loss.is_distribution_output or model.loss.quantile_input
            quantiles = request.quantiles if request and sampled else None
            y_hat = panel.unscaled_target(self._rolled(model, state, panel, last_rows, futr,
                                                       quantiles, h if horizon else None))
            y_hat, names = self._columns(model, y_hat, request, panel)
            full = np.full((len(last_rows), h, y_hat.shape[2]), np.nan, y_hat.dtype)
            full[:, :y_hat.shape[1]] = y_hat
            for k, name in enumerate(names):
                columns[f"{model!r}{name}"] = full[:, :, k].reshape(-1)
        return columns

    def _rolled(self, model, state, panel, last_rows, futr, quantiles, horizon):
        """The model's forecasts (S, steps, k): its own h steps, or `horizon` steps as
        NeuralForecast's predict(h=...) makes them: a recursive model decodes them; a
        direct one forecasts h at a time and feeds its median (or point) forecast back
        as the next window's latest values."""
        def predict(batch, shift, scale):
            with model.precision_scope():
                return predict_windows(model, inference_weights(state), batch, shift, scale, state.buffers,
                                       quantiles=quantiles)

        recursive = _recursive(model)
        if horizon is None or recursive:
            return predict(*self._forecast_batch(model, panel, last_rows, futr, horizon))
        L, model_h = model.windows("predict")
        history, temporal, available = self._history(panel, last_rows, L)
        fed = _median_column(model, quantiles)
        outs = []
        for start in range(0, horizon, model_h):
            step_futr = None if futr is None else (self._padded(futr[0], start, model_h), futr[1])
            batch, shift, scale = self._window_batch(model, panel, history, temporal, step_futr,
                                                     model_h, available)
            y_hat = predict(batch, shift, scale)
            outs.append(y_hat)
            next_values = y_hat[..., fed]
            future = np.zeros((len(last_rows), model_h, temporal.shape[2]), temporal.dtype)
            if step_futr is not None:
                future[:, :, step_futr[1]] = step_futr[0]
            history = np.concatenate([history, next_values.astype(history.dtype)], axis=1)[:, -L:]
            temporal = np.concatenate([temporal, future], axis=1)[:, -L:]
            available = np.concatenate([available, np.ones_like(next_values, available.dtype)],
                                       axis=1)[:, -L:]
        return np.concatenate(outs, axis=1)[:, :horizon]

    @staticmethod
    def _padded(values: np.ndarray, start: int, steps: int) -> np.ndarray:
        """values[:, start:start + steps], zero-padded past the end."""
        part = values[:, start:start + steps]
        if part.shape[1] < steps:
            pad = np.zeros((part.shape[0], steps - part.shape[1], part.shape[2]), part.dtype)
            part = np.concatenate([part, pad], axis=1)
        return part

    def simulate(self, df: pd.DataFrame | None = None, static_df: pd.DataFrame | None = None,
                 futr_df: pd.DataFrame | None = None, n_paths: int = 100,
                 quantiles: list[float] | None = None, seed: int | None = None,
                 method: str = "gaussian_copula", verbose: bool = False, engine=None,
                 **data_kwargs) -> pd.DataFrame:
        """n_paths sample paths of the h steps after each series (NeuralForecast 3.3's
        simulate): unique_id, ds, sample_id and one column per model, n_series * n_paths
        * h rows (sample-major).

        Each model's marginals are its quantiles on `quantiles` (default 0.01 ... 0.99):
        a distribution's, IQLoss's, MQLoss's own, or a point model's conformal ones (fit
        with prediction_intervals); `method` ("gaussian_copula" or "schaake_shuffle",
        see ndwork.simulation) joins them into paths. DeepAR's paths are its own sample
        paths. HINT's paths are reconciled across its hierarchy (each path adds up).
        seed: the draws' seed (default: each model's random_seed, so a call repeats)."""
        from ndwork.simulation import DEFAULT_QUANTILE_GRID, METHODS, SAMPLERS

        _neuralforecast_only("simulate", engine=engine, data_kwargs=data_kwargs)

        if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
            raise ValueError(f"n_paths must be a positive integer, got {n_paths!r}.")
        if method not in METHODS:
            raise ValueError(f"simulate(method={method!r}) is not known; use one of {METHODS}.")
        self._check_fitted()
        grid = Request(quantiles=quantiles or DEFAULT_QUANTILE_GRID).quantiles
        polars = self._answers_in_polars(df)
        df, static_df = self._standard(df, "df", target=True), self._standard(static_df)
        futr_df = self._standard(futr_df, "futr_df")
        panel = self._stored_panel() if df is None else self._panel(df, static_df)
        h = self._horizon()
        last_rows = panel.indptr[1:] - 1
        futr = self._future_exog(panel, 0, h, futr_df)
        histories = [panel.y[a:b] for a, b in zip(panel.indptr[:-1], panel.indptr[1:],
                                                  strict=True)]
        n_rows = panel.n_series * h
        out = {"unique_id": panel.uid_column(np.tile(np.repeat(panel.uids, h), n_paths)),
               "ds": np.tile(panel.future_dates(self.freq, h, 0), n_paths),
               "sample_id": np.repeat(np.arange(n_paths), n_rows)}
        for model, state in zip(self.models, self.states, strict=True):
            rng = np.random.default_rng(model.random_seed if seed is None else seed)
            batch, shift, scale = self._forecast_batch(model, panel, last_rows, futr)
            with model.precision_scope():
                if model.loss.is_distribution_output and model.TRAJECTORIES:
                    paths = trajectories(model, state.params, batch, rng, n_paths)  # (S, h, n)
                    paths = panel.unscaled_target(paths).transpose(0, 2, 1)
                else:
                    positions, values = self._marginals(model, state, batch, shift, scale, grid,
                                                        panel)
                    paths = SAMPLERS[method](positions, values, histories, n_paths, rng)
            if isinstance(model, HINT):  # every path made coherent across the hierarchy
                paths = model.reconcile(paths.transpose(0, 2, 1)).transpose(0, 2, 1)
            full = np.full((panel.n_series, n_paths, h), np.nan)
            full[:, :, :paths.shape[2]] = paths
            out[repr(model)] = full.transpose(1, 0, 2).reshape(-1).astype(panel.y.dtype)
        return self._named(pd.DataFrame(out), polars)

    def _marginals(self, model, state, batch, shift, scale, grid, panel):
        """(quantile positions (Q,), values (S, h, Q)) of the model's forecast."""
        loss = model.loss
        if loss.is_distribution_output or loss.quantile_input:
            y_hat = panel.unscaled_target(predict_windows(model, inference_weights(state), batch, shift,
                                                          scale, state.buffers, quantiles=grid))
            start = 1 if loss.is_distribution_output else 0
            return np.asarray(grid), y_hat[..., start:start + len(grid)].astype(np.float64)
        if loss.outputsize_multiplier > 1:  # MQLoss, HuberMQLoss: their own quantiles
            y_hat = panel.unscaled_target(predict_windows(model, inference_weights(state), batch, shift,
                                                          scale, state.buffers))
            return np.asarray(loss.quantiles, np.float64), y_hat.astype(np.float64)
        y_hat = panel.unscaled_target(predict_windows(model, inference_weights(state), batch, shift, scale,
                                                      state.buffers))
        try:
            bands, _ = self._columns(model, y_hat, Request(quantiles=grid), panel)
        except ValueError as e:
            raise ValueError(f"simulate: {e}") from None
        return np.asarray(grid), bands[..., 1:].astype(np.float64)

    def _forecast_batch(self, model: BaseModel, panel: Panel, last_rows: np.ndarray, futr,
                        horizon: int | None = None):
        """The scaled batch of the windows that end at `last_rows` (one per series), with
        the future exogenous values `futr` of the horizon (the model's, or `horizon`
        steps); and its (shift, scale)."""
        if model.MULTIVARIATE:
            check_series(model, panel)
        L, model_h = model.windows("predict")
        history, temporal, available = self._history(panel, last_rows, L)
        return self._window_batch(model, panel, history, temporal, futr, horizon or model_h,
                                  available)

    @staticmethod
    def _history(panel: Panel, last_rows: np.ndarray, L: int):
        """The L points of each series up to last_rows (y (S, L), temporal, available),
        zero-padded and marked unavailable before a series' start."""
        w = gather_windows(panel, last_rows + 1 - L, L, np.arange(panel.n_series))
        return w["y"], w["temporal"], w["available"]

    @staticmethod
    def _window_batch(model, panel, history, temporal_history, futr, steps, available=None):
        """Windows of `history` (S, L) and its temporal values, then `steps` future steps;
        `available` (S, L) marks the history's real points."""
        n, L = history.shape
        y = np.zeros((n, L + steps), panel.y.dtype)
        y[:, :L] = history
        temporal = np.zeros((n, L + steps, panel.temporal.shape[1]), panel.y.dtype)
        temporal[:, :L] = temporal_history
        if futr is not None:
            temporal[:, L:, futr[1]] = futr[0][:, :steps]
        mask = np.ones(y.shape, panel.y.dtype)
        if available is not None:
            mask[:, :L] = available
        return build_batch(model, y, temporal, panel.temporal_cols, panel.static,
                           panel.static_cols, L, mask)

    def _columns(self, model: BaseModel, y_hat: np.ndarray, request: Request | None,
                 panel: Panel) -> tuple[np.ndarray, list[str]]:
        """The model's forecast columns (S, h, k) and their suffixes, in NeuralForecast's
        order: the point (or mean) first, then the intervals' ends by quantile."""
        loss = model.loss
        if request is None:
            order = _output_order(model)
            return y_hat[..., order], [loss.output_names[k] for k in order]
        if loss.is_distribution_output:
            names = ["", *(request.suffix(q) for q in request.quantiles)]
            return y_hat, names + (loss.param_names if loss.return_params else [])
        if loss.quantile_input:  # IQLoss: the quantiles alone, as NF
            return y_hat, [request.suffix(q) for q in request.quantiles]
        if not _point_forecast(loss):  # MQLoss, QuantileLoss
            trained = np.round(getattr(loss, "quantiles", [getattr(loss, "q", 0.5)]), 6)
            missing = [q for q in request.quantiles if np.round(q, 6) not in trained]
            if missing:  # NeuralForecast answers with the trained ones too, silently
                warnings.warn(f"{model!r} was trained for the quantiles {trained.tolist()} of "
                              f"its {loss!r} and cannot forecast {missing}: its columns are "
                              f"those it was trained for. Train it with a loss that has them.",
                              stacklevel=3)
            order = _output_order(model)
            return y_hat[..., order], [loss.output_names[k] for k in order]
        scores = (self.calibration or {}).get("scores", {}).get(repr(model))
        if scores is None:
            raise ValueError(f"{model!r} forecasts a point ({loss!r}), so it has no intervals: "
                             f"pass prediction_intervals=PredictionIntervals() to fit to "
                             f"calibrate conformal ones, or train it with MQLoss or "
                             f"DistributionLoss.")
        position = {uid: i for i, uid in enumerate(self.calibration["uids"].tolist())}
        unknown = [u for u in panel.uids.tolist() if u not in position]
        if unknown:
            raise ValueError(f"series {unknown[:5]} were not in the data the conformal "
                             f"intervals were calibrated on; fit with them to get intervals.")
        rows = [position[u] for u in panel.uids.tolist()]
        h = y_hat.shape[1]
        method = self.calibration["intervals"].method
        bands = conformal_quantiles(y_hat[..., 0], scores[rows][:, :, :h], request.quantiles,
                                    method)
        names = ["", *(request.suffix(q, conformal=True) for q in request.quantiles)]
        return np.concatenate([y_hat, bands.astype(y_hat.dtype)], axis=-1), names

    def _future_exog(self, panel, test_size, h, futr_df):
        cols = self._futr_cols
        if not cols:
            return None
        if futr_df is None:
            raise ValueError(f"the models use future exogenous columns {cols}; pass futr_df with "
                             f"unique_id, ds and those columns for the {h} steps after each series.")
        futr_df = validate_frame(self._encoded(futr_df), self.freq, cols, name="futr_df",
                                 target=False)
        expected = pd.DataFrame({"unique_id": np.repeat(panel.uids, h),
                                 "ds": panel.future_dates(self.freq, h, test_size)})
        merged = expected.merge(futr_df, on=["unique_id", "ds"], how="left")
        missing = merged[cols].isna().any(axis=1)
        if missing.any():
            row = merged.loc[missing, ["unique_id", "ds"]].iloc[0].tolist()
            raise ValueError(f"futr_df does not cover the horizon: {int(missing.sum())} of the "
                             f"{len(expected)} (unique_id, ds) rows needed are missing, e.g. {row}; "
                             f"nf.get_missing_future(futr_df) lists them, and "
                             f"nf.make_future_dataframe() gives every row to fill.")
        values = merged[cols].to_numpy(panel.y.dtype, copy=True).reshape(panel.n_series, h,
                                                                        len(cols))
        if panel.scaling is not None:  # in the units the models were trained in
            for j, col in enumerate(cols):
                values[:, :, j] = panel.scaling.transform(col, values[:, :, j])
        return values, [panel.temporal_cols.index(c) for c in cols]

    # --- cross-validation ------------------------------------------------------------
    def cross_validation(self, df: pd.DataFrame | None = None,
                         static_df: pd.DataFrame | None = None,
                         n_windows: int | None = 1, step_size: int = 1, val_size: int = 0,
                         test_size: int | None = None, use_init_models: bool = False,
                         use_fitted: bool = False, verbose: bool = True,
                         refit: bool | int = False, parallel=None,
                         level: list | None = None, quantiles: list[float] | None = None,
                         prediction_intervals: PredictionIntervals | None = None,
                         id_col: str = "unique_id", time_col: str = "ds",
                         target_col: str = "y", h: int | None = None,
                         **data_kwargs) -> pd.DataFrame:
        """Forecast n_windows horizons at the end of each series, step_size apart.

        refit=False trains once on the data before the first window; True retrains for
        every window; an integer k retrains every k windows. parallel: None, "threads" or
        dask (True, n, Client, address): refit groups train in parallel; without refit
        the windows are forecast in parallel. level / quantiles: interval columns as
        predict's; prediction_intervals: calibrate conformal intervals for the point
        models on the data before each training's first window. Returns unique_id, ds,
        cutoff (the last timestamp seen), the model columns and y (id_col, time_col,
        target_col: df's names for the first, second and last); the models keep the last
        training and, with refit, its data (predict then forecasts the last window).

        As NeuralForecast: n_windows=None with test_size: as many windows as fit in the
        last test_size points; a fitted NeuralForecast's trainings start from its fitted
        weights unless use_init_models=True (an unfitted one's from fresh weights; with
        refit, every training starts from the fitted weights, not from the previous
        window's); use_fitted=True forecasts the windows with the fitted models without
        training (local scalers are fit on df; the models keep their fit data); df=None
        cross-validates on the stored data (without refit); h: windows longer than the
        models' horizon, forecast as predict(h=...) forecasts them (not with
        prediction_intervals).
        """
        _neuralforecast_only("cross_validation", data_kwargs=data_kwargs)
        horizon = self._predict_horizon(h, False, "cross_validation")
        if horizon and prediction_intervals is not None:
            raise ValueError(f"cross_validation(h={h}) beyond the horizon {self._horizon()} "
                             f"cannot calibrate conformal intervals (as in NeuralForecast); drop "
                             f"prediction_intervals or h.")
        if df is None and refit is not False:
            raise ValueError("cross_validation(refit=...) trains on df's windows: pass df (as "
                             "NeuralForecast); df=None evaluates the stored data without refit.")
        request = None if level is None and quantiles is None else Request(level, quantiles)
        n_windows = self._windows_in(n_windows, test_size, step_size, horizon)
        warm = all(s is not None for s in self.states) and not use_init_models
        if use_fitted and (not warm or refit is not False or prediction_intervals is not None):
            raise ValueError("cross_validation(use_fitted=True) evaluates the fitted models as "
                             "they are: it needs a fitted NeuralForecast, refit=False, "
                             "use_init_models=False and no prediction_intervals (as in "
                             "NeuralForecast).")
        if df is None:  # the stored data, coded and scaled as it was; its y the stored one
            panel = dataclasses.replace(self._stored_panel(), target=None)  # (NF's: float32)
            polars = self.polars_frames
        else:
            if not warm:
                self.categorical_vocabulary = None  # fresh weights: categories afresh
            self.id_col, self.time_col, self.target_col = id_col, time_col, target_col
            polars = is_polars(df)
            panel = self._panel(self._standard(df, "df", target=True), self._standard(static_df))
        h = horizon or self._horizon()
        if use_fitted:
            frames = [self._cv_frame(panel, h + (n_windows - 1 - w) * step_size, request, horizon)
                      for w in range(n_windows)]
            return self._named(_sorted_windows(pd.concat(frames, ignore_index=True)), polars)
        frame = self._cross_validation_panel(panel, n_windows, step_size, val_size, refit, verbose,
                                             parallel, request, prediction_intervals,
                                             "restart" if warm else False, horizon)
        if refit is not False:  # as NeuralForecast: the data of the last training stays
            every = 1 if refit is True else int(refit)
            last = h + (n_windows - 1) % every * step_size
            panel, self.test_size = panel.head(panel.lengths - last), 0
        self.panel, self.polars_frames = panel, polars
        return self._named(frame, polars)

    def _windows_in(self, n_windows, test_size, step_size, horizon=None) -> int:
        """cross_validation's window count, from n_windows or NeuralForecast's test_size."""
        if n_windows is not None:
            return n_windows
        h = horizon or self._horizon()
        if test_size is None or test_size < h or (test_size - h) % step_size:
            raise ValueError(f"cross_validation needs n_windows, or n_windows=None with a "
                             f"test_size of h + k * step_size points (h={h}, step_size="
                             f"{step_size}), got test_size={test_size!r}.")
        return (test_size - h) // step_size + 1

    def _cross_validation_panel(self, panel, n_windows, step_size, val_size, refit, verbose,
                                parallel, request=None, intervals=None,
                                keep=False, horizon=None) -> pd.DataFrame:
        """keep: False (each training from fresh weights) or "restart" (from the current
        ones); horizon: the windows' length when longer than the models'."""
        if n_windows < 1 or step_size < 1:
            raise ValueError("n_windows and step_size must be positive integers.")
        every = n_windows if refit is False else (1 if refit is True else int(refit))
        if every < 1:
            raise ValueError(f"refit={refit!r} must be a bool or a positive integer.")
        h = horizon or self._horizon()
        test_sizes = [h + (n_windows - 1 - w) * step_size for w in range(n_windows)]
        groups = [test_sizes[g:g + every] for g in range(0, n_windows, every)]
        from ndwork.distributed.pool import executor

        with executor(parallel, training=len(groups) > 1) as pool:
            shared = pool.share(panel)
            if len(groups) == 1:
                self._fit_panel(panel, val_size, groups[0][0], keep, verbose)
                self.calibration = self._calibration_before(panel, groups[0][0], intervals,
                                                            val_size, verbose)
                trained = self._without_data()
                frames = pool.map(_cv_window, [(trained, shared, t, request, horizon)
                                               for t in test_sizes])
            else:
                bars = verbose and parallel is None  # progress bars only from this process
                fitted = pool.map(_cv_group, [(self._fresh_copy(keep), shared, val_size, group,
                                               bars, request, intervals, keep, horizon)
                                              for group in groups])
                frames = [frame for group_frames, _, _ in fitted for frame in group_frames]
                self.states, self.calibration = fitted[-1][1], fitted[-1][2]
        return _sorted_windows(pd.concat(frames, ignore_index=True))

    def _calibration_before(self, panel, test_size, intervals, val_size, verbose):
        """The conformal calibration on the data before the last test_size points."""
        if intervals is None:
            return None
        return self._calibrate(panel.head(panel.lengths - test_size), intervals, val_size,
                               verbose)

    def _without_data(self) -> NeuralForecast:
        """The trained models without the training data or the optimizer's state: what a
        parallel forecasting task needs (Adam's moments would triple what it ships)."""
        nf = self._like(self.models)
        nf.states = [dataclasses.replace(state, optimizer=None, train_losses=[],
                                         valid_losses=[]) for state in self.states]
        nf.calibration = self.calibration
        return nf

    def _fresh_copy(self, keep=False) -> NeuralForecast:
        """The same models without data (what a parallel fold needs): untrained, or
        with copies of their states when `keep`."""
        nf = self._like(copy.deepcopy(self.models))
        if keep:
            nf.states = copy.deepcopy(self.states)
        return nf

    def _cv_frame(self, panel: Panel, test_size: int, request=None,
                  horizon: int | None = None) -> pd.DataFrame:
        h = horizon or self._horizon()
        last_rows = panel.indptr[1:] - 1 - test_size
        rows = last_rows[:, None] + np.arange(1, h + 1)  # (S, h): the test window
        futr = None
        if self._futr_cols:
            idx = [panel.temporal_cols.index(c) for c in self._futr_cols]
            futr = panel.temporal[rows][:, :, idx], idx
        frame = self._forecast_frame(panel, test_size, futr, request, horizon)
        frame.insert(2, "cutoff", np.repeat(panel.ds[last_rows], h))
        # last, as NeuralForecast 3.3, and as df gave it (its dtype, its exact values)
        frame["y"] = (self._observed_y(panel, rows) if panel.target is None
                      else panel.target[rows].reshape(-1))
        return frame

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike, model_index: list[int] | None = None,
             overwrite: bool = False, save_dataset: bool = True) -> None:
        """Write the models, their optimizer state and the training data to directory
        path (NeuralForecast's options: model_index, the positions of the models to save,
        default all; save_dataset=False leaves the data out, so the loaded models need
        predict(df=...))."""
        self._check_fitted()
        chosen = range(len(self.models)) if model_index is None else model_index
        if not chosen or any(isinstance(i, bool) or not isinstance(i, int | np.integer)
                             or not 0 <= i < len(self.models) for i in chosen):
            raise ValueError(f"model_index={model_index!r} must list positions among the "
                             f"{len(self.models)} models (0 to {len(self.models) - 1}).")
        self._save(path, self.states, overwrite, list(chosen), save_dataset)

    def _save(self, path, states, overwrite, chosen=None, save_dataset=True):
        arrays, meta_models = {}, []
        chosen = range(len(self.models)) if chosen is None else chosen
        for i, k in enumerate(chosen):
            model, state = self.models[k], states[k]
            name = f"model-{i}"
            arrays[name] = {"params": state.params, "sampler_order": state.sampler_order,
                            "train_losses": np.asarray(state.train_losses, np.float64).reshape(-1, 2),
                            "valid_losses": np.asarray(state.valid_losses, np.float64).reshape(-1, 2),
                            **{f"optimizer.{k}": v for k, v in state.optimizer.buffers.items()},
                            **{f"buffer.{k}": v for k, v in state.buffers.items()}}
            meta_models.append({"class": type(model).__name__,
                                "hyperparameters": model.hyperparameters(),
                                "optimizer_step": state.optimizer.step,
                                "optimizer_skipped": state.optimizer.skipped,
                                "precision": state.precision,
                                "loss_scaler": None if state.loss_scaler is None
                                else state.loss_scaler.to_json(),
                                "rng": checkpoint.rng_to_json(state.rng),
                                "fit": {"start": state.fit_start, "done": state.done,
                                        "bad_checks": state.bad_checks,
                                        "diverged": state.diverged,
                                        "best_valid": None if np.isinf(state.best_valid)
                                        else state.best_valid}})
        p = self.panel
        save_dataset = save_dataset and p is not None
        if save_dataset:
            uids = p.uids.astype(str) if p.uids.dtype == object else p.uids
            arrays["dataset"] = {"uids": uids, "indptr": p.indptr, "y": p.y, "ds": p.ds,
                                 "temporal": p.temporal, "static": p.static,
                                 **({} if p.available is None else {"available": p.available}),
                                 **({} if p.weight is None else {"weight": p.weight})}
            if p.scaling is not None:
                arrays["scaling"] = p.scaling.arrays()
        freq = self.freq if isinstance(self.freq, int) else to_offset(self.freq).freqstr
        meta = {"ndwork_version": __version__, "freq": freq, "models": meta_models,
                "local_scalers": [self.local_scaler_type, self.local_static_scaler_type],
                "temporal_cols": self._temporal_cols, "static_cols": self._static_cols,
                "dataset": save_dataset,
                "columns": [self.id_col, self.time_col, self.target_col],
                "polars_frames": self.polars_frames,
                "categorical_vocabulary": self.categorical_vocabulary}
        if self.calibration is not None:
            c = self.calibration
            cal_uids = c["uids"].astype(str) if c["uids"].dtype == object else c["uids"]
            names = {repr(self.models[k]) for k in chosen}
            arrays["calibration"] = {"uids": cal_uids, **{f"scores.{name}": v
                                                          for name, v in c["scores"].items()
                                                          if name in names}}
            meta["calibration"] = c["intervals"].config()
        checkpoint.write_atomic(path, meta, arrays, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, verbose: bool = False, allow_pickle: bool = False,
             trust_remote: bool = False) -> NeuralForecast:
        """Read a directory written by save; checks version, files and shapes. ndwork's
        checkpoints hold no pickle and no code, so NeuralForecast's allow_pickle and
        trust_remote change nothing (a directory NeuralForecast saved comes over with
        ndwork.interop.from_neuralforecast); verbose: load prints nothing either way."""
        meta = checkpoint.read_meta(path)
        if meta.get("ndwork_version", "").split(".")[:2] != __version__.split(".")[:2]:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} was written by ndwork {meta.get('ndwork_version')}; this is "
                f"{__version__}. Load it with that version or retrain.")
        models, states = [], []
        for i, entry in enumerate(meta["models"]):
            if entry.get("class") not in MODELS | WRAPPERS:
                raise checkpoint.CheckpointError(f"checkpoint model class {entry.get('class')!r} "
                                                 f"is not an ndwork model.")
            model = model_class(entry["class"])(**entry["hyperparameters"])
            state = initial_state(model)
            size = state.params.size
            expected = {"params": (size,), **{f"optimizer.{k}": (size,)
                                              for k in state.optimizer.buffers},
                        **{f"buffer.{k}": v.shape for k, v in state.buffers.items()}}
            arrays = checkpoint.read_arrays(path, f"model-{i}", expected)
            optimizer = Optimizer(model.optimizer, size, model.optimizer_kwargs)
            optimizer.step = int(entry["optimizer_step"])
            optimizer.skipped = int(entry.get("optimizer_skipped", 0))
            optimizer.buffers = {k: arrays[f"optimizer.{k}"] for k in optimizer.buffers}
            precision, scaler = _checkpoint_precision(path, i, entry, arrays["params"])
            fit = entry["fit"]
            best = np.inf if fit["best_valid"] is None else fit["best_valid"]
            states.append(TrainState(arrays["params"], optimizer,
                                     checkpoint.rng_from_json(entry["rng"]),
                                     arrays["sampler_order"],
                                     {k: arrays[f"buffer.{k}"] for k in state.buffers},
                                     [tuple(r) for r in arrays["train_losses"].tolist()],
                                     [tuple(r) for r in arrays["valid_losses"].tolist()],
                                     fit["start"], best, fit["bad_checks"], fit["done"],
                                     fit.get("diverged", ""), precision, scaler))
            models.append(model)
        scalers = meta.get("local_scalers", [None, None])
        nf = cls(models, meta["freq"], *scalers)
        nf.states = states
        nf.id_col, nf.time_col, nf.target_col = meta.get("columns", ["unique_id", "ds", "y"])
        nf.polars_frames = meta.get("polars_frames", False)
        nf.categorical_vocabulary = meta.get("categorical_vocabulary")
        if "calibration" in meta:
            data = checkpoint.read_arrays(path, "calibration")
            nf.calibration = {"intervals": PredictionIntervals(**meta["calibration"]),
                              "uids": data["uids"],
                              "scores": {k.removeprefix("scores."): v for k, v in data.items()
                                         if k.startswith("scores.")}}
        if not meta.get("dataset", True):  # saved with save_dataset=False
            return nf
        data = checkpoint.read_arrays(path, "dataset")
        nf.panel = Panel(uids=data["uids"], indptr=data["indptr"], y=data["y"], ds=data["ds"],
                         temporal=data["temporal"], temporal_cols=meta["temporal_cols"],
                         static=data["static"], static_cols=meta["static_cols"],
                         available=data.get("available"), weight=data.get("weight"))
        if scalers != [None, None]:
            nf.panel.scaling = LocalScaling.from_arrays(*scalers,
                                                        checkpoint.read_arrays(path, "scaling"))
        return nf


def _recursive(model) -> bool:
    """Whether the model (or the model HINT wraps) decodes recursively."""
    inner = model.model if isinstance(model, HINT) else model
    return isinstance(inner, Recursive) and inner.recurrent


def _neuralforecast_layout(parts: dict) -> dict:
    """ndwork.explain's attributions in NeuralForecast's explanation layout."""
    def temporal(key):  # (W, H, O, T, C) -> (W, H, 1, O, C, T)
        value = parts.get(key)
        return None if value is None else value.transpose(0, 1, 2, 4, 3)[:, :, None]

    lags = parts["insample_y"][:, :, None, :, :, None]
    return {"insample": np.concatenate([lags, np.zeros_like(lags)], axis=-1),
            "futr_exog": temporal("futr_exog"), "hist_exog": temporal("hist_exog"),
            "stat_exog": None if parts.get("stat_exog") is None else parts["stat_exog"][:, :, None],
            "baseline_predictions": parts["baseline_predictions"][:, :, None]}


def _sorted_windows(frame: pd.DataFrame) -> pd.DataFrame:
    """Cross-validation rows in NeuralForecast's order: by series, cutoff, ds."""
    return frame.sort_values(["unique_id", "cutoff", "ds"], kind="stable").reset_index(drop=True)


def _median_column(model: BaseModel, quantiles) -> int:
    """The column of predict_windows' output a rolled forecast feeds back: the median
    where there is one (as NeuralForecast), else the point or mean."""
    loss = model.loss
    if quantiles is not None:  # [mean] + quantiles for a distribution, quantiles for IQLoss
        offset = 1 if loss.is_distribution_output else 0
        return offset + list(quantiles).index(0.5) if 0.5 in quantiles else 0
    names = loss.output_names
    return names.index("-median") if "-median" in names else 0


def _neuralforecast_only(method: str, engine=None, distributed_config=None,
                         data_kwargs=None) -> None:
    """NeuralForecast's options ndwork has no use for: Spark (refused, naming ndwork's
    dask options) and its data loaders' (accepted, with a warning that they do nothing)."""
    if engine is not None or distributed_config is not None:
        raise ValueError(f"{method}(): NeuralForecast's Spark options (engine, "
                         f"distributed_config) are not ndwork's; it trains on dask with "
                         f"fit(distributed=...) and forecasts in parallel with "
                         f"predict(parallel=...).")
    if data_kwargs:
        warnings.warn(f"{method}({', '.join(f'{k}=...' for k in data_kwargs)}): "
                      f"{NO_DATA_LOADER}.", stacklevel=3)


def _point_forecast(loss) -> bool:
    """A loss whose model forecasts a point without intervals (conformal ones can be
    calibrated for it); not a quantile, multi-quantile or distribution loss."""
    return not (loss.outputsize_multiplier > 1 or loss.is_distribution_output
                or isinstance(loss, QuantileLoss | HuberQLoss) or loss.quantile_input)


def _output_order(model: BaseModel) -> list[int]:
    """NeuralForecast's column order: a multi-quantile loss's own, else the point or mean
    (or else the median) first, then by quantile."""
    if hasattr(model.loss, "column_order"):
        return model.loss.column_order
    names = model.loss.output_names
    first = names.index("") if "" in names else (names.index("-median") if "-median" in names
                                                 else 0)
    return [first] + [k for k in range(len(names)) if k != first]


def _cv_group(item):
    """Train once at the group's first cutoff and forecast each of its windows."""
    nf, panel, val_size, test_sizes, verbose, request, intervals, keep, horizon = item
    nf._fit_panel(panel, val_size, test_sizes[0], keep, verbose)
    nf.calibration = nf._calibration_before(panel, test_sizes[0], intervals, val_size, verbose)
    return ([nf._cv_frame(panel, t, request, horizon) for t in test_sizes], nf.states,
            nf.calibration)


def _cv_window(item):
    nf, panel, test_size, request, horizon = item
    return nf._cv_frame(panel, test_size, request, horizon)


def _forecast_chunk(item):
    nf, panel, futr_df, request = item
    return nf._forecast_columns(panel, 0, nf._future_exog(panel, 0, nf._horizon(), futr_df),
                                request)


def _checkpoint_precision(path, index: int, entry: dict, params: np.ndarray):
    """The precision a checkpointed model trained under and its fp16 loss scaler, checked
    against each other and the stored weights (master weights: float32, or float64 for
    fp64), so that a model never resumes with a silently changed setup."""
    from ndwork.config import PRECISIONS
    from ndwork.training.loss_scaling import LossScaler

    precision, scaler = entry.get("precision", "fp32"), entry.get("loss_scaler")
    master = np.float64 if precision == "fp64" else np.float32
    problem = None
    if precision not in PRECISIONS:
        problem = f"precision {precision!r} is not one of {PRECISIONS}"
    elif params.dtype != master:
        problem = f"precision {precision!r} with {params.dtype} weights (expected {np.dtype(master)})"
    elif (scaler is not None) != (precision == "fp16"):
        problem = f"precision {precision!r} {'with' if scaler else 'without'} a loss scaler"
    else:
        try:
            scaler = None if scaler is None else LossScaler.from_json(scaler)
        except (TypeError, ValueError) as error:
            problem = str(error)
    if problem:
        raise checkpoint.CheckpointError(
            f"checkpoint {path}, model {index}: {problem}; the file was edited or written "
            f"by another tool. Save the model again from the session that trained it, or "
            f"retrain.")
    return precision, scaler
