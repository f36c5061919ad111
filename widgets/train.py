"""The train panel: pick a model and data, train in the background, watch the loss."""

from __future__ import annotations

import dataclasses
import threading
import time

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go

import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.losses import MAE, DistributionLoss, IQLoss, MQLoss
from ndwork.models import MODELS
from ndwork.utils import PredictionIntervals
from widgets.updates import MainThreadUpdates

DATASETS = {"AirPassengers (monthly)": ("MS", air_passengers),
            "synthetic panel (8 series, daily)": ("D", lambda: synthetic_panel(8, 400, seed=0)),
            "CSV file (unique_id, ds, y)": (None, None)}
REDRAW_S = 0.25  # the loss figure redraws at most this often: no flicker, no backlog
LEVELS = [80, 90]
# how the model's forecast carries its uncertainty: (loss, fit with conformal
# calibration, predict(level=LEVELS))
UNCERTAINTY = {
    "point (MAE)": (MAE, False, False),
    "quantiles (MQLoss)": (lambda: MQLoss(level=LEVELS), False, False),
    "Normal distribution": (lambda: DistributionLoss("Normal", level=LEVELS), False, False),
    "StudentT distribution": (lambda: DistributionLoss("StudentT", level=LEVELS), False, False),
    "implicit quantiles (IQLoss)": (IQLoss, False, True),
    "conformal (MAE + PredictionIntervals)": (MAE, True, True),
}


def load_dataset(name: str, csv_path: str = "", freq: str = "D") -> tuple[pd.DataFrame, str]:
    """A shipped dataset by name, or a user's CSV with unique_id, ds, y."""
    default_freq, loader = DATASETS[name]
    if loader is None:
        frame = pd.read_csv(csv_path)
        if "ds" in frame and not pd.api.types.is_integer_dtype(frame["ds"]):
            frame["ds"] = pd.to_datetime(frame["ds"])
        return frame, freq
    return loader(), default_freq


class TrainPanel:
    """Model and dataset pickers, main hyper-parameters, Train and Stop, a progress bar
    and live train/validation loss curves. Training runs in a background thread, so
    the notebook stays responsive; Stop ends it at a step boundary and keeps the
    parameters of that step, as a finished fit would. The thread changes no widget: it
    posts updates that run on the main thread (widgets.updates)."""

    def __init__(self, options):
        self.options = options
        self.model = w.Dropdown(options=sorted(MODELS), value="NHITS", description="model")
        self.dataset = w.Dropdown(options=list(DATASETS), description="dataset")
        self.csv_path = w.Text(placeholder="path/to/file.csv", description="CSV")
        self.freq = w.Text(value="D", description="CSV freq")
        self.h = w.BoundedIntText(value=12, min=1, max=10_000, description="h")
        self.input_size = w.BoundedIntText(value=24, min=1, max=100_000, description="input_size")
        self.max_steps = w.BoundedIntText(value=200, min=1, max=1_000_000,
                                          description="max_steps")
        self.learning_rate = w.FloatLogSlider(value=1e-3, base=10, min=-5, max=-1,
                                              description="learning_rate")
        self.windows = w.BoundedIntText(value=256, min=1, max=100_000,
                                        description="windows/step")
        self.val_size = w.BoundedIntText(value=12, min=0, max=100_000, description="val_size")
        self.uncertainty = w.Dropdown(options=list(UNCERTAINTY), description="intervals")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop",
                                    disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="steps")
        self.status = w.HTML()
        # the training loss is in the scaler's units, validation in the data's (as in
        # NeuralForecast), so each gets its own axis
        self.figure = go.FigureWidget(
            data=[go.Scatter(x=[], y=[], mode="lines", name="train loss (scaled)"),
                  go.Scatter(x=[], y=[], mode="lines+markers", name="validation loss",
                             yaxis="y2")],
            layout=go.Layout(title="loss", xaxis_title="step", height=320,
                             yaxis=dict(title="train loss (scaled)"),
                             yaxis2=dict(title="validation loss", overlaying="y", side="right"),
                             legend=dict(x=0.5, y=1.0), margin=dict(l=50, r=50, t=40, b=40)))
        self.train_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = w.VBox([
            w.HBox([self.model, self.dataset]), w.HBox([self.csv_path, self.freq]),
            w.HBox([self.h, self.input_size, self.max_steps]),
            w.HBox([self.learning_rate, self.windows, self.val_size]), self.uncertainty,
            w.HBox([self.train_button, self.stop_button, self.progress]), self.status,
            self.figure])
        self.nf: NeuralForecast | None = None
        self.df: pd.DataFrame | None = None
        self.forecast: pd.DataFrame | None = None  # nf.predict() of the last training
        self.error: BaseException | None = None
        self.updates = MainThreadUpdates()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._train, self._valid = ([], []), ([], [])
        self._last_post = 0.0
        self.on_finished: list = []  # callbacks(panel) run after each training

    def build(self) -> tuple[NeuralForecast, pd.DataFrame]:
        df, freq = load_dataset(self.dataset.value, self.csv_path.value, self.freq.value)
        loss, _, _ = UNCERTAINTY[self.uncertainty.value]
        kwargs = dict(h=self.h.value, input_size=self.input_size.value,
                      max_steps=self.max_steps.value, learning_rate=self.learning_rate.value,
                      windows_batch_size=self.windows.value, scaler_type="robust",
                      val_check_steps=max(1, self.max_steps.value // 20), loss=loss())
        cls = MODELS[self.model.value]
        if cls.MULTIVARIATE:
            kwargs["n_series"] = df["unique_id"].nunique()
        return NeuralForecast([cls(**kwargs)], freq), df

    def start(self) -> None:
        """Start training in a background thread (Train button). The data, the model and
        the Optimizations are read here, on the main thread; fit and the forecast run in
        the thread under those Optimizations; widgets change only on the main thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.error = None
        self._train, self._valid = ([], []), ([], [])
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.x, trace.y = [], []
        try:
            nf, df = self.build()
        except Exception as e:  # a bad CSV or option: shown in the panel
            self._finish(None, None, None, e)
            return
        self.progress.max, self.progress.value = self.max_steps.value, 0
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "training..."
        switches = dataclasses.asdict(self.options.optimizations)
        _, conformal, levels = UNCERTAINTY[self.uncertainty.value]
        fit_kwargs = self.options.fit_kwargs()
        if conformal:
            fit_kwargs["prediction_intervals"] = PredictionIntervals(n_windows=2)
        self._thread = threading.Thread(
            target=self._run, args=(nf, df, switches, fit_kwargs, self.val_size.value,
                                    LEVELS if levels else None), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End training at the next step boundary (Stop button)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the training thread, then apply its pending widget updates."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.updates.drain()

    def _run(self, nf, df, switches, fit_kwargs, val_size, level) -> None:
        forecast, error = None, None
        try:
            with ndwork.optimizations(**switches):
                nf.fit(df, val_size=val_size, verbose=False, callback=self._on_step,
                       **fit_kwargs)
                forecast = nf.predict()  # under the same Optimizations as the fit
                if level:  # IQLoss's and conformal intervals are asked for
                    bands = nf.predict(level=level)
                    forecast = forecast.join(bands[bands.columns.difference(forecast.columns)])
        except Exception as e:  # shown in the panel; the notebook keeps running
            error = e
        self.updates.post(lambda: self._finish(nf, df, forecast, error))

    def _finish(self, nf, df, forecast, error) -> None:
        """On the main thread, when training ends."""
        self.error = error
        if error is None:
            self.nf, self.df, self.forecast = nf, df, forecast
            steps = len(nf.states[0].train_losses)
            stopped = " (stopped)" if self._stop.is_set() else ""
            self.status.value = f"trained {steps} steps{stopped}"
        else:
            self.status.value = f"<b>error:</b> {type(error).__name__}: {error}"
        self._draw()
        self.train_button.disabled, self.stop_button.disabled = False, True
        for callback in self.on_finished:
            callback(self)

    def _on_step(self, step: int, loss: float, valid: float | None) -> bool:
        """In the training thread: record, and post a redraw at most every REDRAW_S."""
        self._train[0].append(step)
        self._train[1].append(loss)
        if valid is not None:
            self._valid[0].append(step)
            self._valid[1].append(valid)
        now = time.perf_counter()
        if now - self._last_post >= REDRAW_S:
            self._last_post = now
            self.updates.post(self._draw)
        return self._stop.is_set()

    def _draw(self) -> None:
        """On the main thread: the loss curves and the progress bar, as recorded so far."""
        train = [list(v) for v in self._train]
        valid = [list(v) for v in self._valid]
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = train
            self.figure.data[1].x, self.figure.data[1].y = valid
        self.progress.value = train[0][-1] if train[0] else 0

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self._train[1])
