"""NeuralForecast 3.3's front-end options: local scalers, val_df, predict_insample,
save options, polars frames, categorical exogenous, available_mask and sample_weight."""

import numpy as np
import pandas as pd
import pytest
from coreforecast.grouped_array import GroupedArray

from ndwork import NeuralForecast
from ndwork.data.local_scalers import LOCAL_SCALERS, LocalScaling
from ndwork.datasets import synthetic_panel
from ndwork.models import MLP, NHITS

SMALL = dict(windows_batch_size=64, max_steps=20, enable_progress_bar=False)
MLP_SMALL = dict(hidden_size=32, **SMALL)


@pytest.fixture(scope="module")
def panel():
    df = synthetic_panel(3, 80, seed=3)
    return df.assign(promo=np.sin(np.arange(len(df)) / 3.0))


def _affine(df, cols, a=250.0, b=-40.0):
    """df with `cols` mapped to a * value + b, a different offset and scale per series."""
    codes = df["unique_id"].astype("category").cat.codes.to_numpy()
    out = df.copy()
    for col in cols:
        out[col] = a * (1 + codes) * df[col] + b * (1 + codes)
    return out


@pytest.mark.parametrize("kind", ["standard", "robust", "robust-iqr", "minmax"])
def test_a_local_scaler_makes_training_blind_to_each_series_units(panel, kind):
    """Affine scalers see a * y + b as y: the fit is the same and the forecasts are
    the original ones mapped by the same a, b (per series), for the target and the
    future exogenous column alike."""
    forecasts = []
    for mapped in (lambda f, cols: f, _affine):
        nf = NeuralForecast([MLP(h=6, input_size=12, futr_exog_list=["promo"], **MLP_SMALL)],
                            freq="D", local_scaler_type=kind)
        nf.fit(mapped(panel, ["y", "promo"]), verbose=False)
        future = mapped(nf.make_future_dataframe().assign(promo=0.5), ["promo"])
        forecasts.append(nf.predict(futr_df=future))
    expected = _affine(forecasts[0].rename(columns={"MLP": "y"}), ["y"])["y"]
    np.testing.assert_allclose(forecasts[1]["MLP"], expected, rtol=2e-4)


def test_local_scaling_round_trips_exactly_as_coreforecast_scales():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 3.0, (4, 10)).astype(np.float32) + 0.1
    indptr = np.arange(0, 41, 10)
    for kind in LOCAL_SCALERS:
        scaler = LOCAL_SCALERS[kind]().fit(GroupedArray(values.reshape(-1), indptr))
        scaling = LocalScaling(kind, None, {"y": scaler.stats_}, {})
        expected = scaler.transform(GroupedArray(values.reshape(-1), indptr)).reshape(4, 10)
        np.testing.assert_allclose(scaling.transform("y", values), expected, rtol=1e-6)
        stacked = np.stack([expected, 2 * expected], axis=-1)  # (series, steps, columns)
        back = scaling.inverse_target(stacked)
        np.testing.assert_allclose(back[..., 0], values, rtol=2e-5)
        assert back.shape == stacked.shape


def test_local_scalers_survive_save_load_and_cross_validation(panel, tmp_path):
    nf = NeuralForecast([NHITS(h=6, input_size=12, **SMALL)], freq="D", local_scaler_type="boxcox")
    cv = nf.cross_validation(panel, n_windows=2, step_size=6, verbose=False)
    raw = panel.set_index(["unique_id", "ds"])["y"]
    np.testing.assert_allclose(cv["y"], raw.loc[list(zip(cv.unique_id, cv.ds, strict=True))],
                               rtol=1e-5)  # the y column in the data's units
    assert np.abs(cv["NHITS"] - cv["y"]).mean() < 3 * cv["y"].std()
    nf.save(tmp_path / "m")
    loaded = NeuralForecast.load(tmp_path / "m")
    assert loaded.local_scaler_type == "boxcox"
    pd.testing.assert_frame_equal(loaded.predict(), nf.predict())


def test_local_scaler_bad_input_names_the_fix(panel):
    with pytest.raises(ValueError, match=r"local_scaler_type='zscore'.*standard"):
        NeuralForecast([MLP(h=6, input_size=12)], freq="D", local_scaler_type="zscore")
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D", local_scaler_type="boxcox")
    with pytest.raises(ValueError, match=r"'boxcox' cannot scale column 'y'.*negative"):
        nf.fit(panel.assign(y=panel.y - 100), verbose=False)


@pytest.mark.parametrize("step_size", [1, 5])
def test_predict_insample_windows_as_neuralforecast(panel, step_size):
    """NeuralForecast's layout: windows of h every step_size points ending at each
    series' last point, the first ones on zero-padded inputs, y in the data's units."""
    nf = NeuralForecast([MLP(h=6, input_size=12, scaler_type="robust", **MLP_SMALL),
                         NHITS(h=6, input_size=12, **SMALL)], freq="D",
                        local_scaler_type="standard")
    nf.fit(panel, verbose=False)
    out = nf.predict_insample(step_size=step_size)
    assert out.columns.tolist() == ["unique_id", "ds", "cutoff", "MLP", "NHITS", "y"]
    windows = (80 - 6) // step_size + 1
    assert len(out) == 3 * windows * 6
    first = out.groupby(["unique_id", "cutoff"], sort=False).ds.min()
    np.testing.assert_array_equal(first.to_numpy() - first.index.get_level_values("cutoff"),
                                  np.timedelta64(1, "D"))
    assert (out.groupby("unique_id").ds.max() == panel.groupby("unique_id").ds.max()).all()
    merged = out.merge(panel, on=["unique_id", "ds"], suffixes=("", "_data"))
    np.testing.assert_allclose(merged.y, merged.y_data, rtol=1e-5)


def test_predict_insample_equals_predict_at_each_cutoff(panel):
    nf = NeuralForecast([MLP(h=6, input_size=12, scaler_type="standard", **MLP_SMALL)],
                        freq="D")
    nf.fit(panel, verbose=False)
    out = nf.predict_insample(step_size=6)
    for cutoff in out.cutoff.unique()[-3:]:
        expected = nf.predict(df=panel[panel.ds <= cutoff])
        got = out[out.cutoff == cutoff].reset_index(drop=True)
        np.testing.assert_allclose(got["MLP"], expected["MLP"], rtol=1e-5)
        pd.testing.assert_series_equal(got["ds"], expected["ds"])
    with pytest.raises(ValueError, match="step_size=0"):
        nf.predict_insample(step_size=0)


def test_val_df_validates_like_the_tail_it_would_be(panel):
    """val_df appended to df trains exactly as val_size on the joined frame, and
    predict forecasts after val_df's end."""
    cut = panel.ds.max() - pd.Timedelta(days=9)
    train, val = panel[panel.ds <= cut], panel[panel.ds > cut]
    options = dict(h=6, input_size=12, val_check_steps=5, futr_exog_list=["promo"], **MLP_SMALL)
    a = NeuralForecast([MLP(**options)], freq="D", local_scaler_type="minmax")
    a.fit(train, val_df=val, verbose=False)
    b = NeuralForecast([MLP(**options)], freq="D", local_scaler_type="minmax")
    b.fit(panel, val_size=9, verbose=False)
    assert len(a.states[0].valid_losses) == 4
    assert a.states[0].valid_losses != b.states[0].valid_losses  # scalers fit on df only
    c = NeuralForecast([MLP(**options)], freq="D")
    c.fit(train, val_df=val, verbose=False)
    d = NeuralForecast([MLP(**options)], freq="D")
    d.fit(panel, val_size=9, verbose=False)
    assert c.states[0].valid_losses == d.states[0].valid_losses
    np.testing.assert_array_equal(c.states[0].params, d.states[0].params)
    future = c.make_future_dataframe().assign(promo=0.0)
    assert (future.ds > panel.ds.max()).all()
    pd.testing.assert_frame_equal(c.predict(futr_df=future), d.predict(futr_df=future))


def test_val_df_bad_input_names_the_fix(panel):
    cut = panel.ds.max() - pd.Timedelta(days=9)
    train, val = panel[panel.ds <= cut], panel[panel.ds > cut]
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    with pytest.raises(ValueError, match="same series as df.*only in df \\['s2'\\]"):
        nf.fit(train, val_df=val[val.unique_id != "s2"], verbose=False)
    with pytest.raises(ValueError, match="same length"):
        nf.fit(train, val_df=val.iloc[1:], verbose=False)
    with pytest.raises(ValueError, match="val_df and val_size=9 cannot be set together"):
        nf.fit(train, val_df=val, val_size=9, verbose=False)


def test_save_chosen_models_with_or_without_the_data(panel, tmp_path):
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL), NHITS(h=6, input_size=12, **SMALL)],
                        freq="D", local_scaler_type="robust")
    nf.fit(panel.drop(columns="promo"), verbose=False)
    nf.save(tmp_path / "nhits", model_index=[1], save_dataset=False)
    loaded = NeuralForecast.load(tmp_path / "nhits")
    assert [repr(m) for m in loaded.models] == ["NHITS"] and loaded.panel is None
    with pytest.raises(ValueError, match="save_dataset=False.*pass df="):
        loaded.predict()
    data = panel.drop(columns="promo")
    pd.testing.assert_frame_equal(loaded.predict(df=data), nf.predict(df=data)[["unique_id", "ds",
                                                                                  "NHITS"]])
    loaded.save(tmp_path / "again")  # a model without data saves again
    assert NeuralForecast.load(tmp_path / "again").panel is None
    with pytest.raises(ValueError, match=r"model_index=\[2\] must list positions"):
        nf.save(tmp_path / "bad", model_index=[2])
