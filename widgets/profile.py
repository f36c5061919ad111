"""The profile panel: an op-level profile of a short training, its hotspots and its
memory timeline, and a pyinstrument sampling profile."""

from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

import ndwork


class ProfilePanel:
    def __init__(self, options, train_panel):
        self.options, self.train_panel = options, train_panel
        self.steps = w.BoundedIntText(value=20, min=1, max=10_000, description="steps")
        self.sampling = w.Checkbox(value=False, description="sampling profile (pyinstrument)")
        self.run_button = w.Button(description="Profile training", button_style="primary")
        self.table = w.HTML()
        self.sampled = w.HTML()
        self.shares = go.FigureWidget(layout=go.Layout(title="share of the run by op",
                                                       height=340,
                                                       margin=dict(l=200, r=20, t=40, b=40)))
        self.memory = go.FigureWidget(layout=go.Layout(title="memory", height=280,
                                                       xaxis_title="seconds",
                                                       yaxis_title="MiB"))
        self.run_button.on_click(lambda _: self.run())
        self.widget = w.VBox([w.HBox([self.steps, self.sampling, self.run_button]), self.shares,
                              self.table, self.memory, self.sampled])
        self.profile = None

    def run(self):
        nf, df = self.train_panel.build()
        nf.models[0].max_steps = self.steps.value
        with self.options.active(), ndwork.profile(sampling=self.sampling.value) as prof:
            nf.fit(df, verbose=False)
        self.profile = prof
        table = prof.table()
        with self.shares.batch_update():
            self.shares.data = []
            self.shares.add_bar(y=table["op"][::-1], x=100 * table["share"][::-1],
                                orientation="h", name="% of the run")
        self.table.value = table.to_html(index=False, float_format="{:.3g}".format)
        with self.memory.batch_update():
            self.memory.data = []
            t = [s for s, _, _ in prof.timeline]
            self.memory.add_scatter(x=t, y=[r / 2**20 for _, r, _ in prof.timeline], name="RSS")
            self.memory.add_scatter(x=t, y=[a / 2**20 for _, _, a in prof.timeline],
                                    name="traced Python allocations")
        if prof.sampled is not None:
            self.sampled.value = prof.sampled.output_html()
        return prof
