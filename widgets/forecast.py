"""The forecast panel: history, forecast and prediction intervals of one series (every
`-lo-`/`-hi-` pair the forecast has: MQLoss's, a distribution's, IQLoss's or conformal)."""

from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

HISTORY_POINTS = 120


class ForecastPanel:
    """Plots the trained model's forecast after each training of the train panel."""

    def __init__(self, train_panel):
        self.train_panel = train_panel
        self.series = w.Dropdown(description="series")
        self.figure = go.FigureWidget(layout=go.Layout(title="forecast", height=320,
                                                       margin=dict(l=50, r=20, t=40, b=40)))
        self.series.observe(lambda _: self.draw(), names="value")
        train_panel.on_finished.append(lambda panel: self.refresh())
        self.widget = w.VBox([self.series, self.figure])
        self.forecast = None

    def refresh(self) -> None:
        """The train panel's forecast, computed in its thread under its Optimizations."""
        panel = self.train_panel
        if panel.forecast is None:
            return
        self.forecast = panel.forecast
        ids = list(dict.fromkeys(panel.df["unique_id"]))
        keep = self.series.value if self.series.value in ids else ids[0]
        self.series.options = ids
        self.series.value = keep
        self.draw()

    def draw(self) -> None:
        if self.forecast is None or self.series.value is None:
            return
        uid = self.series.value
        history = self.train_panel.df[self.train_panel.df["unique_id"] == uid].tail(HISTORY_POINTS)
        fcst = self.forecast[self.forecast["unique_id"] == uid]
        name = repr(self.train_panel.nf.models[0])
        traces = [go.Scatter(x=history["ds"], y=history["y"], name="history", mode="lines")]
        for level in sorted({c.rsplit("-", 1)[1] for c in fcst.columns if "-lo-" in c},
                            key=float, reverse=True):
            traces.append(go.Scatter(x=list(fcst["ds"]) + list(fcst["ds"])[::-1],
                                     y=list(fcst[f"{name}-hi-{level}"])
                                     + list(fcst[f"{name}-lo-{level}"])[::-1],
                                     fill="toself", name=f"{level}% interval", mode="none",
                                     opacity=0.3))
        point = next(c for c in (name, f"{name}-median", f"{name}_ql0.5") if c in fcst)
        traces.append(go.Scatter(x=fcst["ds"], y=fcst[point], name=name, mode="lines+markers"))
        with self.figure.batch_update():
            self.figure.data = []
            for trace in traces:
                self.figure.add_trace(trace)
