"""The forecast panel: history, forecast and prediction intervals of one series (every
`-lo-`/`-hi-` pair the forecast has: MQLoss's, a distribution's, IQLoss's or conformal),
and, for a model that explains its forecast (TFT), its variable importances and
attention weights."""

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
        small = dict(height=300, margin=dict(l=50, r=20, t=40, b=40))
        self.importance = go.FigureWidget(layout=go.Layout(
            title="variable importance (mean selection weight)", barmode="group", **small))
        self.attention = go.FigureWidget(layout=go.Layout(
            title="attention (mean over windows and heads)", xaxis_title="key step",
            yaxis=dict(title="query step", autorange="reversed"), **small))
        self.interpretation = w.HBox([self.importance, self.attention],
                                     layout=w.Layout(display="none"))
        self.widget = w.VBox([self.series, self.figure, self.interpretation])
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
        self.draw_interpretation()

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

    def draw_interpretation(self) -> None:
        """The trained model's feature_importances() and attention_weights(), when it
        records them (TFT, after the panel's prediction); hidden otherwise."""
        model = self.train_panel.nf.models[0]
        if not getattr(model, "interpretability_params", None):
            self.interpretation.layout.display = "none"
            return
        bars = []
        for title, frame in model.feature_importances().items():
            values = frame["importance"] if "importance" in frame else frame.mean(axis=0)
            bars.append(go.Bar(x=list(values.index), y=list(values.to_numpy()), name=title))
        with self.importance.batch_update():
            self.importance.data = []
            for bar in bars:
                self.importance.add_trace(bar)
        with self.attention.batch_update():
            self.attention.data = []
            self.attention.add_trace(go.Heatmap(z=model.attention_weights(),
                                                colorscale="Viridis"))
        self.interpretation.layout.display = "flex"
