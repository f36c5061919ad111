"""The workbench's UI layer: ipywidgets + plotly panels over ndwork.

`ndwork` never imports this package (nor ipywidgets or plotly); these panels sit on top
of its public API: `Optimizations`, `NeuralForecast.fit(callback=...)`, `ndwork.bench`
suites and `ndwork.profile`.
"""

from widgets.bench import BenchmarkPanel
from widgets.forecast import ForecastPanel
from widgets.optimizations import OptimizationPanel
from widgets.profile import ProfilePanel
from widgets.train import TrainPanel, load_dataset


def workbench():
    """All panels in tabs: optimizations, train, forecast, benchmark, profile."""
    import ipywidgets as w

    options = OptimizationPanel()
    train = TrainPanel(options)
    forecast = ForecastPanel(train)
    panels = [("Optimizations", options), ("Train", train), ("Forecast", forecast),
              ("Benchmark", BenchmarkPanel(options)), ("Profile", ProfilePanel(options, train))]
    tabs = w.Tab(children=[p.widget for _, p in panels], titles=[t for t, _ in panels])
    return tabs, dict(panels)


__all__ = ["BenchmarkPanel", "ForecastPanel", "OptimizationPanel", "ProfilePanel", "TrainPanel",
           "load_dataset", "workbench"]
