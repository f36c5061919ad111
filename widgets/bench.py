"""The benchmark panel: runs ndwork.bench suites and plots baseline against optimized."""

from __future__ import annotations

import threading

import ipywidgets as w
import plotly.graph_objects as go

from ndwork.bench import attention, kernels, models

LAYOUT = dict(height=340, margin=dict(l=60, r=20, t=40, b=80), barmode="group")


class BenchmarkPanel:
    """Kernels (numba vs numpy), models (steps/s, peak memory) and attention (flash vs
    naive against N), each run in the background on small sizes by default."""

    def __init__(self, options, quick: bool = True):
        self.options, self.quick = options, quick
        self.suite = w.ToggleButtons(options=["kernels", "models", "attention"],
                                     description="suite")
        self.run_button = w.Button(description="Run benchmark", button_style="primary")
        self.status = w.HTML()
        self.throughput = go.FigureWidget(layout=go.Layout(title="throughput", **LAYOUT))
        self.memory = go.FigureWidget(layout=go.Layout(title="peak memory", **LAYOUT))
        self.run_button.on_click(lambda _: self.start())
        self.widget = w.VBox([w.HBox([self.suite, self.run_button]), self.status,
                              self.throughput, self.memory])
        self.results: dict = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.status.value = f"running {self.suite.value}..."
        self._thread = threading.Thread(target=self.run, args=(self.suite.value,), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def run(self, suite: str) -> dict:
        with self.options.active():
            if suite == "kernels":
                result = kernels.run(quick=self.quick)
            elif suite == "models":
                small = [c for c in models.CONFIGS if "small" in c[0]]
                result = models.run(quick=self.quick, configs=small)
            else:
                result = attention.run(quick=self.quick, lengths=[128, 256, 512] if self.quick
                                       else None)
        self.results[suite] = result
        getattr(self, f"_plot_{suite}")(result)
        self.status.value = f"{suite}: done"
        return result

    def _bars(self, figure, x, series: dict, yaxis: str):
        with figure.batch_update():
            figure.data = []
            for name, values in series.items():
                figure.add_bar(x=x, y=values, name=name)
            figure.layout.yaxis.title = yaxis

    def _plot_kernels(self, result):
        rows = [r for r in result["rows"] if "numba" in r]
        self._bars(self.throughput, [r["kernel"] for r in rows],
                   {"numpy reference": [r["numpy"] for r in rows],
                    "numba": [r["numba"] for r in rows]}, "GB/s or GFLOP/s")

    def _plot_models(self, result):
        rows = result["rows"]
        names = [r["config"] for r in rows]
        self._bars(self.throughput, names, {"numpy path": [r["steps/s numpy"] for r in rows],
                                            "numba path": [r["steps/s numba"] for r in rows]},
                   "training steps/s")
        self._bars(self.memory, names, {"peak": [r["peak MiB"] for r in rows]}, "MiB")

    def _plot_attention(self, result):
        frame = attention.frame(result)
        frame = frame[~frame["causal"]].dropna(subset=["fwd+bwd ms"])
        with self.throughput.batch_update(), self.memory.batch_update():
            self.throughput.data, self.memory.data = [], []
            for kind, part in frame.groupby("kind"):
                self.throughput.add_scatter(x=part["N"], y=part["fwd+bwd GFLOP/s"], name=kind)
                self.memory.add_scatter(x=part["N"], y=part["peak MiB"], name=kind)
            self.throughput.layout.xaxis.title = self.memory.layout.xaxis.title = "N"
            self.throughput.layout.yaxis.title = "forward+backward GFLOP/s"
            self.memory.layout.yaxis.title = "peak MiB"

