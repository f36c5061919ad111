"""Data shapes a tutorial does not show, run by NeuralForecast and by ndwork with only the
import changed: weekly series ending on different dates, integer timestamps, integer
targets, a series of exactly input_size points, a categorical unique_id, in-sample
forecasts after a cross-validation, quantile losses' columns, cross-validation beyond
the horizon and on the stored data. The frames agree in columns, dtypes, keys and the
target's values."""

import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import NF_QUIET


def _panel(lengths, freq=None, ends=None, integer_target=False):
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate(lengths):
        ds = (np.arange(n) if freq is None
              else pd.date_range(end=ends[i], periods=n, freq=freq))
        y = 10 + 3 * np.sin(np.arange(n) / 1.1) + 0.1 * np.arange(n) + rng.normal(0, .5, n) + i
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds,
                                    "y": np.round(y * 10).astype(np.int64) if integer_target
                                    else y}))
    return pd.concat(frames, ignore_index=True)


def _run(library, scenario):
    nf_cls = importlib.import_module(library).NeuralForecast
    models = importlib.import_module(f"{library}.models")
    quiet = NF_QUIET if library == "neuralforecast" else {}
    if scenario == "weekly, different ends":
        df = _panel([60, 80, 45], "W-SUN", ["2020-12-27", "2020-11-29", "2021-01-03"])
        nf = nf_cls([models.NHITS(h=4, input_size=8, max_steps=3, **quiet),
                     models.LSTM(h=4, input_size=8, max_steps=3, **quiet)], freq="W-SUN")
        nf.fit(df)
        return {"predict": nf.predict(),
                "cross_validation": nf.cross_validation(df, n_windows=2, step_size=2)}
    if scenario == "integer ds and y, insample after cv":
        df = _panel([50, 70], integer_target=True)
        nf = nf_cls([models.MLP(h=5, input_size=10, max_steps=3, **quiet)], freq=1)
        return {"cross_validation": nf.cross_validation(df, n_windows=3, step_size=1),
                "predict": nf.predict(), "predict_insample": nf.predict_insample(step_size=3)}
    if scenario == "a series of input_size points":
        df = _panel([100, 14], "D", ["2021-06-30", "2021-06-30"])
        nf = nf_cls([models.MLP(h=7, input_size=14, max_steps=3, **quiet)], freq="D")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nf.fit(df)
        if library == "ndwork":  # NeuralForecast skips it silently
            assert any("['s1'] (1 in all) have no training window" in str(w.message)
                       for w in caught)
        return {"predict": nf.predict()}
    if scenario == "categorical unique_id":
        df = _panel([80, 70], "D", ["2021-06-30", "2021-06-20"])
        df["unique_id"] = df["unique_id"].astype("category")
        nf = nf_cls([models.MLP(h=7, input_size=14, max_steps=3, **quiet)], freq="D")
        nf.fit(df)
        return {"predict": nf.predict(), "make_future_dataframe": nf.make_future_dataframe(),
                "cross_validation": nf.cross_validation(df, n_windows=2),
                "predict_insample": nf.predict_insample(step_size=7)}
    if scenario == "cross-validation beyond the horizon, on the stored data":
        df = _panel([80, 70], "D", ["2021-06-30", "2021-06-20"])
        df["monday"] = (df.ds.dt.dayofweek == 0).astype(float)
        nf = nf_cls([models.MLP(h=7, input_size=14, max_steps=3, futr_exog_list=["monday"],
                                **quiet),
                     models.LSTM(h=7, input_size=14, max_steps=3, **quiet)], freq="D")
        longer = nf.cross_validation(df, n_windows=2, step_size=3, refit=True, h=14)
        nf.fit(df)
        return {"longer": longer, "stored": nf.cross_validation(n_windows=2, step_size=3)}
    if scenario == "quantile losses, other levels asked":
        losses = importlib.import_module(library + (".losses.pytorch" if library ==
                                                    "neuralforecast" else ".losses"))
        df = _panel([80, 80], "D", ["2021-06-30", "2021-06-30"])
        nf = nf_cls([models.MLP(h=7, input_size=14, max_steps=3, **quiet,
                                loss=losses.MQLoss(quantiles=[0.9, 0.1, 0.5])),
                     models.NHITS(h=7, input_size=14, max_steps=3, **quiet,
                                  loss=losses.HuberMQLoss(level=[90, 50])),
                     models.NBEATS(h=7, input_size=14, max_steps=3, **quiet,
                                   loss=losses.DistributionLoss("StudentT", level=[80]))],
                    freq="D")
        nf.fit(df)
        out = {"predict": nf.predict(),
               "cross_validation": nf.cross_validation(df, n_windows=2, step_size=7),
               "predict_insample": nf.predict_insample(step_size=7)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # last: NeuralForecast's distribution loss then forgets its own level=[80]
            out["level"] = nf.predict(level=[60])
        if library == "ndwork":  # NeuralForecast answers with their own columns silently
            assert sum("cannot forecast [0.2, 0.8]" in str(w.message) for w in caught) == 2
        return out
    raise AssertionError(scenario)


@pytest.mark.parametrize("scenario", ["weekly, different ends",
                                      "integer ds and y, insample after cv",
                                      "a series of input_size points", "categorical unique_id",
                                      "quantile losses, other levels asked",
                                      "cross-validation beyond the horizon, on the stored data"])
def test_both_libraries_answer_with_the_same_frames(scenario):
    theirs, ours = _run("neuralforecast", scenario), _run("ndwork", scenario)
    assert theirs.keys() == ours.keys()
    for name in theirs:
        a, b = theirs[name], ours[name]
        assert b.columns.tolist() == a.columns.tolist(), name
        assert b.dtypes.astype(str).tolist() == a.dtypes.astype(str).tolist(), name
        keys = [c for c in ("unique_id", "ds", "cutoff", "y") if c in a.columns]
        pd.testing.assert_frame_equal(b[keys].reset_index(drop=True),
                                      a[keys].reset_index(drop=True), check_exact=True)
        forecasts = [c for c in a.columns if c not in keys]
        assert np.isfinite(b[forecasts].to_numpy()).all(), name


def test_example_data_is_neuralforecasts():
    """`from ndwork.utils import AirPassengersDF` (and the panel, its static frame and the
    array) gives NeuralForecast's example data, the same values and dtypes."""
    import neuralforecast.utils

    import ndwork.utils

    for name in ndwork.utils.EXAMPLES:
        theirs, ours = getattr(neuralforecast.utils, name), getattr(ndwork.utils, name)
        if isinstance(theirs, np.ndarray):
            np.testing.assert_array_equal(ours, theirs)
            assert ours.dtype == theirs.dtype
        else:
            pd.testing.assert_frame_equal(ours, theirs)


@pytest.mark.parametrize("freq, pandas_freq", [("D", "D"), ("B", "B"), ("H", "h"), ("MS", "MS"),
                                               ("Q", "QS"), ("T", "min"), ("S", "s")])
def test_calendar_features_are_neuralforecasts(freq, pandas_freq):
    import neuralforecast.utils

    import ndwork.utils

    df = pd.DataFrame({"unique_id": "a", "y": 1.0,
                       "ds": pd.date_range("2019-12-25", periods=500, freq=pandas_freq)})
    theirs, their_columns = neuralforecast.utils.augment_calendar_df(df, freq)
    ours, our_columns = ndwork.utils.augment_calendar_df(df, freq)
    assert our_columns == their_columns
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
