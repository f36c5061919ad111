"""The benchmark panel: runs ndwork.bench suites and plots baseline against optimized."""

from __future__ import annotations

import dataclasses
import threading

import ipywidgets as w
import plotly.graph_objects as go

import ndwork
from ndwork.bench import attention, kernels, models
from widgets.updates import MainThreadUpdates

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
        self.updates = MainThreadUpdates()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Run the chosen suite in a background thread (Run button); False, and nothing
        started, while a run is still going."""
        if self._thread is not None and self._thread.is_alive():
            self.status.value = "a benchmark is running; wait for it to finish"
            return False
        suite = self.suite.value
        self.status.value = f"running {suite}..."
        self.run_button.disabled = True
        switches = dataclasses.asdict(self.options.optimizations)
        self._thread = threading.Thread(target=self._run_in_thread, args=(suite, switches),
                                        daemon=True)
        self._thread.start()
        return True

    def wait(self) -> None:
        """Wait for the run, then apply its pending widget updates."""
        if self._thread is not None:
            self._thread.join()
        self.updates.drain()

    def _run_in_thread(self, suite: str, switches: dict) -> None:
        try:
            with ndwork.optimizations(**switches):
                result = self.measure(suite)
        except Exception as e:  # shown in the panel
            self.updates.post(lambda error=e: self._finish(suite, None, error))
            return
        self.updates.post(lambda: self._finish(suite, result, None))

    def run(self, suite: str) -> dict:
        """Run a suite in this thread under the panel's Optimizations and plot it."""
        with self.options.active():
            result = self.measure(suite)
        self._finish(suite, result, None)
        return result

    def measure(self, suite: str) -> dict:
        if suite == "kernels":
            return kernels.run(quick=self.quick)
        if suite == "models":
            small = [c for c in models.CONFIGS if "small" in c[0]]
            return models.run(quick=self.quick, configs=small)
        return attention.run(quick=self.quick, lengths=[128, 256, 512] if self.quick else None)

    def _finish(self, suite: str, result: dict | None, error: BaseException | None) -> None:
        """On the main thread: plot the result (or show the error)."""
        self.run_button.disabled = False
        if error is not None:
            self.status.value = f"<b>error:</b> {type(error).__name__}: {error}"
            return
        self.results[suite] = result
        getattr(self, f"_plot_{suite}")(result)
        self.status.value = f"{suite}: done"

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

