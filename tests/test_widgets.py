"""The panels, headless: construction, toggles, Train, Stop and the loss figure."""

import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from widgets import workbench  # noqa: E402


@pytest.fixture
def panels():
    _, panels = workbench()
    train = panels["Train"]
    train.dataset.value = "AirPassengers (monthly)"
    train.model.value = "MLP"
    train.windows.value = 32
    return panels


def test_toggles_change_the_optimizations(panels):
    options = panels["Optimizations"]
    assert options.optimizations.kernels == "numba"
    options.kernels.value = False
    options.attention.value = False
    options.threads.value = 1
    o = options.optimizations
    assert (o.kernels, o.attention, o.threads) == ("numpy", "naive", 1)
    assert "kernels=numpy" in options.status.value
    options.workers.value = 2
    assert options.fit_kwargs() == {"distributed": 2}
    options.precision.value = "bf16"  # says whether its GEMMs are native here, and why not
    assert options.optimizations.precision == "bf16"
    assert "activations in bf16, bf16 GEMMs in float32: oneDNN cannot be limited to threads=1" \
        in options.status.value or "the optional oneDNN wheel is not installed" \
        in options.status.value or "has none of" in options.status.value
    options.threads.value = options.threads.max
    options.precision.value = "auto"
    assert "auto: " in options.status.value and "per layer shape, measured" in options.status.value


def test_train_updates_the_loss_figure_and_the_forecast(panels):
    train, forecast = panels["Train"], panels["Forecast"]
    train.max_steps.value = 25
    train.start()
    train.wait(120)
    assert train.error is None
    assert list(train.figure.data[0].x) == list(range(1, 26))
    assert np.isfinite(train.figure.data[0].y).all()
    assert len(train.figure.data[1].y) > 0  # validation checks, every max_steps // 20 steps
    assert forecast.series.value == "AirPassengers" and len(forecast.figure.data) == 2


def test_stop_ends_at_a_step_boundary_and_keeps_that_state(panels):
    train = panels["Train"]
    train.max_steps.value = 100_000
    train.start()
    deadline = time.time() + 60
    while len(train.losses) < 5 and time.time() < deadline:
        time.sleep(0.05)
    train.stop()
    train.wait(60)
    steps = len(train.nf.states[0].train_losses)
    assert 5 <= steps < 100_000 and train.progress.value == steps
    assert "stopped" in train.status.value


def test_the_notebook_stays_responsive_while_training(panels):
    """A proxy for UI freezes: the main thread's wake-ups while training runs."""
    train = panels["Train"]
    train.max_steps.value = 300
    train.start()
    gaps, last = [], time.perf_counter()
    while train._thread.is_alive():
        time.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    assert max(gaps) < 0.5, f"the main thread waited {max(gaps):.2f} s"


def test_bad_csv_shows_an_error_in_the_panel(panels, tmp_path):
    train = panels["Train"]
    (tmp_path / "bad.csv").write_text("id,time,value\na,1,2\n")
    train.dataset.value = "CSV file (unique_id, ds, y)"
    train.csv_path.value = str(tmp_path / "bad.csv")
    train.start()
    train.wait(60)
    assert isinstance(train.error, ValueError) and "missing column" in train.status.value


def test_profile_and_benchmark_panels(panels):
    profile = panels["Profile"]
    profile.steps.value = 3
    prof = profile.run()
    assert "linear" in set(prof.table().op) and len(profile.shares.data[0].y) > 0
    bench = panels["Benchmark"]
    result = bench.run("kernels")
    assert len(bench.throughput.data) == 2 and result["rows"]


def test_training_changes_widgets_only_on_the_main_thread(panels):
    import threading

    train = panels["Train"]
    train.max_steps.value = 30
    seen = set()
    for widget in (train.progress, train.status, train.train_button):
        widget.observe(lambda change: seen.add(threading.get_ident()), names=["value",
                                                                               "disabled"])
    train.figure.observe(lambda change: seen.add(threading.get_ident()), names="_data")
    train.start()
    train.wait(120)
    assert train.error is None and train.progress.value == 30
    assert seen == {threading.get_ident()}


def test_the_forecast_runs_under_the_panels_optimizations(panels, monkeypatch):
    import ndwork

    kernels_at_predict = []
    predict = ndwork.NeuralForecast.predict

    def recording(self, *args, **kwargs):
        kernels_at_predict.append(ndwork.config.active().kernels)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(ndwork.NeuralForecast, "predict", recording)
    panels["Optimizations"].kernels.value = False  # the numpy reference path
    train = panels["Train"]
    train.max_steps.value = 3
    train.start()
    train.wait(120)
    assert train.error is None and kernels_at_predict == ["numpy"]
    assert panels["Forecast"].forecast is train.forecast


def test_a_benchmark_cannot_be_started_twice(panels, monkeypatch):
    import threading

    bench = panels["Benchmark"]
    release, runs = threading.Event(), []

    def slow(suite):
        runs.append(suite)
        release.wait(30)
        return {"rows": []}

    monkeypatch.setattr(bench, "measure", slow)
    assert bench.start() is True
    assert bench.start() is False and "running" in bench.status.value
    release.set()
    bench.wait()
    assert runs == ["kernels"] and bench.status.value == "kernels: done"
    assert not bench.run_button.disabled


@pytest.mark.parametrize("model", ["LSTM", "TCN", "DilatedRNN", "xLSTM"])
def test_the_model_picker_trains_the_recurrent_and_convolutional_models(panels, model):
    train = panels["Train"]
    assert model in train.model.options
    train.model.value = model
    train.max_steps.value = 5
    train.start()
    train.wait(120)
    assert train.error is None, train.status.value
    assert len(train.forecast) == 12 and np.isfinite(train.forecast[model]).all()


@pytest.mark.parametrize("choice", ["quantiles (MQLoss)", "StudentT distribution",
                                    "implicit quantiles (IQLoss)",
                                    "conformal (MAE + PredictionIntervals)"])
def test_the_forecast_plots_every_kind_of_interval(panels, choice):
    train, forecast = panels["Train"], panels["Forecast"]
    train.max_steps.value = 10
    train.uncertainty.value = choice
    train.start()
    train.wait(120)
    assert train.error is None, train.error
    names = [trace.name for trace in forecast.figure.data]
    assert names == ["history", "90% interval", "80% interval", "MLP"]
    band = forecast.figure.data[1]
    assert np.isfinite(band.y).all() and len(band.y) == 2 * 12


def test_the_forecast_panel_plots_what_tft_explains(panels):
    train, forecast = panels["Train"], panels["Forecast"]
    assert forecast.interpretation.layout.display == "none"
    train.model.value = "TFT"
    train.max_steps.value = 3
    train.start()
    train.wait(120)
    assert train.error is None, train.status.value
    assert forecast.interpretation.layout.display == "flex"
    bars = forecast.importance.data
    assert [bar.name for bar in bars] == ["Past variable importance over time"]
    assert list(bars[0].x) == ["repeated_target", "observed_target"]
    np.testing.assert_allclose(sum(bars[0].y), 1, rtol=1e-5)
    heatmap = np.array(forecast.attention.data[0].z)
    assert heatmap.shape == (36, 36)  # input_size + h
    train.model.value = "MLP"  # a model without an interpretation hides the plots again
    train.start()
    train.wait(120)
    assert forecast.interpretation.layout.display == "none"
