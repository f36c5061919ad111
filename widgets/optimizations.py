"""The optimization panel: one widget per switch of ndwork.Optimizations."""

from __future__ import annotations

import dataclasses
import html
import os

import ipywidgets as w

import ndwork
from ndwork.config import PRECISIONS
from ndwork.kernels.gemm import precision_summary


class OptimizationPanel:
    """Toggles for the four optimizations, plus the dask workers `fit` should use.

    `optimizations` is the ndwork.Optimizations the toggles describe; run code under
    it with `with panel.active(): ...`.
    """

    def __init__(self):
        cores = os.cpu_count() or 1
        self.kernels = w.ToggleButton(value=True, description="numba kernels",
                                      tooltip="off: the plain-numpy reference kernels")
        self.attention = w.ToggleButton(value=True, description="flash attention",
                                        tooltip="off: materialized (naive) attention")
        self.threads = w.IntSlider(value=cores, min=1, max=cores, description="threads")
        self.precision = w.Dropdown(options=list(PRECISIONS), value="fp32",
                                    description="precision")
        self.workers = w.IntSlider(value=0, min=0, max=cores, description="dask workers",
                                   tooltip="0: train in this process")
        self.status = w.HTML()
        for control in (self.kernels, self.attention, self.threads, self.precision, self.workers):
            control.observe(self._refresh, names="value")
        self.widget = w.VBox([w.HBox([self.kernels, self.attention]), self.threads,
                              self.precision, self.workers, self.status])
        self._refresh()

    @property
    def optimizations(self) -> ndwork.Optimizations:
        return ndwork.Optimizations(kernels="numba" if self.kernels.value else "numpy",
                                    attention="flash" if self.attention.value else "naive",
                                    threads=self.threads.value, precision=self.precision.value)

    def active(self):
        """A context manager that runs code under these switches."""
        return ndwork.optimizations(**dataclasses.asdict(self.optimizations))

    def fit_kwargs(self) -> dict:
        return {"distributed": self.workers.value} if self.workers.value else {}

    def _refresh(self, change=None):
        o = self.optimizations
        where = f"{self.workers.value} dask workers" if self.workers.value else "this process"
        self.status.value = (f"<code>kernels={o.kernels} attention={o.attention} "
                             f"threads={o.threads} precision={o.precision}</code> on {where}"
                             f"<br><small>{html.escape(precision_summary(o.precision, o.threads))}"
                             f"</small>")
