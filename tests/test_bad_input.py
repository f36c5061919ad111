"""Each bad input raises an error that names the problem and the fix."""

import numpy as np
import pandas as pd
import pytest

import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.losses import MAE, MQLoss, loss_from_config
from ndwork.models import MLP, NHITS


def fit(df, **kwargs):
    model = MLP(h=12, input_size=24, max_steps=2, hidden_size=8, **kwargs)
    return NeuralForecast([model], freq="MS").fit(df, verbose=False)


@pytest.fixture
def df():
    return air_passengers()


def test_missing_column(df):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['y'\].*rename"):
        fit(df.rename(columns={"y": "value"}))


def test_non_numeric_y(df):
    with pytest.raises(ValueError, match="'y' .* must be numeric.*to_numeric"):
        fit(df.assign(y=df.y.astype(str)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_y(df, bad):
    df.loc[5, "y"] = bad
    with pytest.raises(ValueError, match="NaN or inf.*AirPassengers.*fill or drop"):
        fit(df)


def test_duplicate_rows(df):
    with pytest.raises(ValueError, match=r"duplicated \(unique_id, ds\)"):
        fit(pd.concat([df, df.iloc[[3]]]))


def test_series_too_short_names_it(df):
    short = df.iloc[:20].assign(unique_id="tiny")
    with pytest.raises(ValueError, match=r"series \['tiny'\].*fewer training points than "
                                         r"input_size=24 \(the shortest 20"):
        fit(pd.concat([df, short]))


@pytest.mark.parametrize("multivariate", [False, True])
def test_a_series_shorter_than_its_held_out_part_names_it(df, multivariate):
    """cross-validation (or val_size) holds out more points than a series has."""
    from ndwork.models import TSMixer

    short = df.iloc[-10:].assign(unique_id="tiny")  # ends with the others
    model = (TSMixer(h=4, input_size=12, n_series=2, max_steps=1) if multivariate
             else MLP(h=4, input_size=12, max_steps=1))
    with pytest.raises(ValueError, match=r"series \['tiny'\].*no point left to train on.*"
                                         r"12 of their last points are held out"):
        NeuralForecast([model], "MS").cross_validation(pd.concat([df, short]), n_windows=3,
                                                       step_size=4)


def test_irregular_timestamps_name_the_series(df):
    with pytest.raises(ValueError, match=r"series 'AirPassengers'.*not regular.*"
                                         r"1949-10-01 00:00:00 then 1949-12-01.*fill_gaps"):
        fit(df.drop(index=10))


def test_fill_gaps_adds_the_missing_rows_masked_out():
    """The fix the gap error names: missing timestamps become rows with available_mask 0
    (y 0, exogenous values carried forward); rows there keep their values and mask; a
    model then fits and forecasts; a date off the grid still raises."""
    from ndwork.data import fill_gaps

    df = pd.DataFrame({"unique_id": ["b"] * 4 + ["a"] * 5, "ds": [3, 4, 6, 7, 1, 2, 4, 5, 7],
                       "y": np.arange(9.0), "x": np.arange(9.0) * 10,
                       "available_mask": [1.0, 0.0, 1, 1, 1, 1, 1, 1, 1]})
    df["note"] = [1.0] * 5 + [np.nan] + [1.0] * 3  # missing in a row that is there: stays so
    filled = fill_gaps(df, 1)
    assert np.isnan(filled.set_index(["unique_id", "ds"]).loc[("a", 2), "note"])
    assert filled[["unique_id", "ds"]].values.tolist() == (
        [["a", d] for d in range(1, 8)] + [["b", d] for d in range(3, 8)])
    added = filled.set_index(["unique_id", "ds"]).loc[[("a", 3), ("a", 6), ("b", 5)]]
    assert added.available_mask.tolist() == [0, 0, 0] and added.y.tolist() == [0, 0, 0]
    assert added.x.tolist() == [50.0, 70.0, 10.0]  # the series' previous row's
    kept = filled.merge(df, on=["unique_id", "ds"], suffixes=("", "_before"))
    assert len(kept) == len(df)
    for col in ("y", "x", "available_mask", "note"):
        np.testing.assert_array_equal(kept[col], kept[f"{col}_before"])

    monthly = air_passengers().drop(index=[10, 11, 50])
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=3)], "MS")
    nf.fit(fill_gaps(monthly, "MS"), verbose=False)
    assert np.isfinite(nf.predict().MLP).all()
    off_grid = pd.DataFrame({"unique_id": "a", "y": 1.0, "ds": pd.to_datetime(
        ["2020-01-01", "2020-01-03", "2020-01-04 12:00"], format="ISO8601")})
    with pytest.raises(ValueError, match="not on freq='D''s grid"):
        fill_gaps(off_grid, "D")


@pytest.mark.parametrize("freq,dates,regular", [
    ("MS", pd.date_range("2000-01-01", periods=30, freq="MS"), True),
    ("MS", pd.date_range("2000-01-15", periods=30, freq="MS") + pd.Timedelta(days=14), False),
    ("ME", pd.date_range("2000-01-31", periods=30, freq="ME"), True),
    ("W-SUN", pd.date_range("2000-01-02", periods=30, freq="W-SUN"), True),
    ("W-SUN", pd.date_range("2000-01-03", periods=30, freq="7D"), False),  # Mondays
    ("QS", pd.date_range("2000-01-01", periods=30, freq="QS").delete(7), False),  # a gap
    ("B", pd.date_range("2000-01-03", periods=30, freq="B"), True),
])
def test_calendar_frequencies_are_checked_without_a_date_range_per_series(freq, dates, regular):
    """The vectorized check: each date one offset after the previous, each series' first on
    the offset's anchor; a second, regular series beside it changes nothing."""
    from ndwork.data import validate_frame

    good = pd.date_range("1990-01-01", periods=10, freq=freq)
    df = pd.DataFrame({"unique_id": ["a"] * len(dates) + ["b"] * 10,
                       "ds": list(dates) + list(good), "y": 1.0})
    if regular:
        assert len(validate_frame(df, freq)) == len(df)
    else:
        with pytest.raises(ValueError, match="series 'a'.*not regular"):
            validate_frame(df, freq)


def test_wrong_ds_dtype(df):
    with pytest.raises(ValueError, match="must be datetime.*to_datetime"):
        fit(df.assign(ds=df.ds.astype(str)))
    with pytest.raises(ValueError, match="needs integer ds"):
        NeuralForecast([MLP(h=2, input_size=4)], freq=1).fit(df)


def test_integer_ds_with_freq_1():
    df = pd.DataFrame({"unique_id": "a", "ds": np.arange(40), "y": np.arange(40.0)})
    nf = NeuralForecast([MLP(h=3, input_size=6, max_steps=2, hidden_size=8)], freq=1)
    fcst = nf.fit(df, verbose=False).predict()
    assert fcst.ds.tolist() == [40, 41, 42]


def test_unknown_model_option():
    closest = r"unknown option\(s\) \['hiden_size'\]; 'hiden_size': did you mean 'hidden_size'\?"
    with pytest.raises(ValueError, match=closest):
        MLP(h=12, input_size=24, hiden_size=8)


def test_unknown_loss_and_scaler_and_optimizer():
    with pytest.raises(ValueError, match="unknown loss 'Pinball'"):
        loss_from_config({"name": "Pinball"})
    with pytest.raises(ValueError, match="ndwork.losses loss"):
        MLP(h=12, input_size=24, loss="mae")
    with pytest.raises(ValueError, match="scaler_type 'zscore' is not known"):
        MLP(h=12, input_size=24, scaler_type="zscore")
    with pytest.raises(ValueError, match="optimizer 'lion' is not known"):
        MLP(h=12, input_size=24, optimizer="lion")
    with pytest.raises(ValueError, match="optimizer_kwargs"):
        fit(air_passengers(), optimizer_kwargs={"betaz": 1})
    with pytest.raises(ValueError, match="level"):
        MQLoss(level=[120])


@pytest.mark.parametrize("name,value", [("h", 0), ("h", -1), ("input_size", 0),
                                        ("input_size", 2.5)])
def test_h_and_input_size_positive(name, value):
    kwargs = {"h": 12, "input_size": 24, name: value}
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        MLP(**kwargs)


def test_predict_before_fit():
    with pytest.raises(ValueError, match="not fitted.*call fit"):
        NeuralForecast([MLP(h=12, input_size=24)], freq="MS").predict()


def test_unknown_optimization_switch():
    with pytest.raises(ValueError, match="kernels='cuda' is not known"):
        ndwork.Optimizations(kernels="cuda")
    with pytest.raises(ValueError, match="threads"):
        ndwork.Optimizations(threads=0)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_diverging_run_stops_and_keeps_last_finite_parameters(df, kernels):
    model = MLP(h=12, input_size=24, max_steps=200, learning_rate=1e12, hidden_size=16,
                loss=MAE(), optimizer="sgd")
    nf = NeuralForecast([model], freq="MS")
    with (ndwork.optimizations(kernels=kernels),
          pytest.raises(ndwork.training.TrainingDiverged, match="keeps the parameters of step")):
        nf.fit(df, verbose=False)
    state = nf.states[0]
    assert np.isfinite(state.params).all()
    good_steps = len(state.train_losses)
    assert good_steps < 200
    # the kept parameters are exactly those after the last finite step
    replay = MLP(h=12, input_size=24, max_steps=good_steps, learning_rate=1e12, hidden_size=16,
                 loss=MAE(), optimizer="sgd")
    with ndwork.optimizations(kernels=kernels):
        replayed = NeuralForecast([replay], freq="MS").fit(df, verbose=False)
    np.testing.assert_array_equal(replayed.states[0].params, state.params)
    with pytest.warns(RuntimeWarning, match="diverged"):
        assert len(nf.predict()) == 12


def test_models_need_distinct_names():
    with pytest.raises(ValueError, match="alias"):
        NeuralForecast([MLP(h=1, input_size=2), MLP(h=1, input_size=2)], freq="D")


def test_val_size_shorter_than_h():
    df = synthetic_panel(2, 100)
    with pytest.raises(ValueError, match="val_size=5 is shorter than h=12"):
        NeuralForecast([NHITS(h=12, input_size=24, max_steps=2, val_check_steps=1,
                              mlp_units=[[8, 8]])], "D").fit(df, val_size=5, verbose=False)


@pytest.mark.parametrize("freq", ["D", "h"])
def test_gaps_at_fixed_frequencies_name_the_series(freq):
    df = synthetic_panel(3, 50, freq=freq)
    gap = df.index[(df.unique_id == "s1")][10]
    with pytest.raises(ValueError, match=f"series 's1'.*not regular at freq='{freq}'"):
        NeuralForecast([MLP(h=2, input_size=4, max_steps=1)], freq).fit(df.drop(index=gap))
    with pytest.raises(ValueError, match="not regular"):  # the right step, the wrong freq
        NeuralForecast([MLP(h=2, input_size=4, max_steps=1)], "2D" if freq == "D" else "D").fit(df)


def test_a_failed_fit_leaves_no_untrained_model_that_predicts(df):
    diverging = MLP(h=12, input_size=24, max_steps=50, learning_rate=1e12, hidden_size=16,
                    loss=MAE(), optimizer="sgd", alias="diverging")
    after = MLP(h=12, input_size=24, max_steps=3, hidden_size=16, alias="after")
    nf = NeuralForecast([diverging, after], freq="MS")
    with pytest.raises(ndwork.training.TrainingDiverged):
        nf.fit(df, verbose=False)
    assert nf.states[0].diverged and nf.states[1] is None
    with pytest.raises(ValueError, match=r"\['after'\] are not fitted.*did not complete"):
        nf.predict()


def test_a_failed_refit_keeps_the_previous_fit(df):
    models = [MLP(h=12, input_size=24, max_steps=4, hidden_size=16, alias=name)
              for name in ("first", "second")]
    nf = NeuralForecast(models, freq="MS").fit(df, verbose=False)
    before = [s.params.copy() for s in nf.states]
    forecast = nf.predict()
    calls = []

    def interrupt_the_second_model(step, loss, valid):
        calls.append(step)
        if len(calls) > 6:  # first model done (4 steps), the second at its 3rd step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nf.fit(df.assign(y=df.y * 2), callback=interrupt_the_second_model, verbose=False)
    assert not np.array_equal(nf.states[0].params, before[0])  # its re-fit completed
    np.testing.assert_array_equal(nf.states[1].params, before[1])  # kept its previous fit
    assert nf.states[1].done and len(nf.states[1].train_losses) == 4
    # the kept fit forecasts the data it was fitted on as before
    np.testing.assert_array_equal(nf.predict(df)["second"], forecast["second"])


def test_a_diverged_model_is_reported_when_it_predicts(df):
    model = MLP(h=12, input_size=24, max_steps=50, learning_rate=1e12, hidden_size=16,
                loss=MAE(), optimizer="sgd")
    nf = NeuralForecast([model], freq="MS")
    with pytest.raises(ndwork.training.TrainingDiverged):
        nf.fit(df, verbose=False)
    with pytest.warns(RuntimeWarning, match="MLP diverged in its last fit.*last finite step"):
        nf.predict()


def test_every_ndwork_exception_survives_pickle(df):
    import pickle

    from ndwork.training.checkpoint import CheckpointError

    model = MLP(h=12, input_size=24, max_steps=50, learning_rate=1e12, hidden_size=16,
                loss=MAE(), optimizer="sgd")
    with pytest.raises(ndwork.training.TrainingDiverged) as caught:
        NeuralForecast([model], freq="MS").fit(df, verbose=False)
    errors = [caught.value, CheckpointError("checkpoint x is corrupt"),
              ndwork.PrecisionFallbackWarning("bf16 GEMMs run in float32 here")]
    assert {type(e) for e in errors} == _ndwork_exception_types()
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(caught.value)).state.params,
                                  caught.value.state.params)


def _ndwork_exception_types():
    """Every exception class ndwork defines (so a new one must join the pickle test)."""
    import importlib
    import inspect
    import pkgutil

    found = set()
    for info in pkgutil.walk_packages(ndwork.__path__, "ndwork."):
        if ".bench" in info.name:
            continue
        module = importlib.import_module(info.name)
        found |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__.startswith("ndwork")}
    return found


def test_divergence_keeps_the_running_statistics_of_the_last_good_step():
    from ndwork.models import PatchTST

    df = air_passengers()

    def model(steps):
        return PatchTST(h=12, input_size=24, max_steps=steps, hidden_size=16, n_heads=2,
                        linear_hidden_size=8, encoder_layers=2, learning_rate=1e9,
                        optimizer="sgd", scaler_type="identity", windows_batch_size=16)

    nf = NeuralForecast([model(60)], freq="MS")
    with pytest.raises(ndwork.training.TrainingDiverged):
        nf.fit(df, verbose=False)
    state = nf.states[0]
    good_steps = len(state.train_losses)
    replayed = NeuralForecast([model(good_steps)], freq="MS").fit(df, verbose=False).states[0]
    for name, value in replayed.buffers.items():
        np.testing.assert_array_equal(state.buffers[name], value, err_msg=name)
        assert np.isfinite(value).all()


def test_a_shuffled_frame_is_the_sorted_frame(df):
    """Sorting by (unique_id, ds) with integer keys: any row order gives the same panel,
    and a repeated (unique_id, ds) row is named wherever it sits."""
    from ndwork.data import validate_frame

    two = pd.concat([df, df.assign(unique_id="A-first", y=df.y * 2)], ignore_index=True)
    shuffled = two.sample(frac=1.0, random_state=0)
    expected = two.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(validate_frame(shuffled, "MS"), expected)
    with pytest.raises(ValueError, match="1 duplicated \\(unique_id, ds\\) row"):
        validate_frame(pd.concat([shuffled, shuffled.iloc[[5]]]), "MS")
