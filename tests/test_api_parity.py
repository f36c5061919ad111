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
from ndwork.utils import PredictionIntervals

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


def test_start_padding_trains_and_forecasts_series_shorter_than_the_input(panel):
    short = pd.concat([panel.drop(columns="promo"),
                       pd.DataFrame({"unique_id": "tiny", "ds": pd.date_range("2000-03-10",
                                                                             periods=8),
                                     "y": np.arange(8.0)})])
    plain = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    with pytest.raises(ValueError, match="tiny.*start_padding_enabled=True"):
        plain.fit(short, verbose=False)
    nf = NeuralForecast([MLP(h=6, input_size=12, start_padding_enabled=True,
                             scaler_type="standard", **MLP_SMALL)], freq="D")
    nf.fit(short, verbose=False)
    fc = nf.predict()
    assert np.isfinite(fc["MLP"]).all() and (fc.unique_id == "tiny").sum() == 6
    insample = nf.predict_insample()
    assert np.isfinite(insample["MLP"]).all()


def test_a_series_of_input_size_points_is_forecast_not_trained_on(panel):
    """As NeuralForecast: input_size points are enough to forecast a series; with no
    training window of its own it is left out of the steps, and a warning says so."""
    data = pd.concat([panel.drop(columns="promo"),
                      pd.DataFrame({"unique_id": "new", "ds": pd.date_range("2000-03-10",
                                                                            periods=12),
                                    "y": np.arange(12.0)})])
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    with pytest.warns(UserWarning, match=r"\['new'\] \(1 in all\) have no training window"):
        nf.fit(data, verbose=False)
    fc = nf.predict()
    assert np.isfinite(fc["MLP"]).all() and (fc.unique_id == "new").sum() == 6


@pytest.mark.parametrize("value", [1, "0.5", [0.5], [0.2, 1.5]])
def test_availability_threshold_bad_values_name_the_fix(value):
    with pytest.raises(ValueError, match="training_data_availability_threshold=.*float in"):
        MLP(h=6, input_size=12, training_data_availability_threshold=value)


def test_availability_threshold_is_the_fraction_of_real_points(panel):
    model = MLP(h=6, input_size=12, training_data_availability_threshold=[0.5, 1.0])
    assert model.min_available("train") == (6, 6)
    assert MLP(h=6, input_size=12).min_available("train") == (1, 1)


def test_polars_frames_in_and_out(panel, tmp_path, monkeypatch):
    """Given polars frames, NeuralForecast answers in polars frames with the same values
    as for pandas."""
    pl = pytest.importorskip("polars")
    data = panel.drop(columns="promo")
    frame = pl.DataFrame({c: data[c].to_numpy() for c in data.columns})
    results = {}
    for kind, df in (("pandas", data), ("polars", frame)):
        nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
        nf.fit(df, verbose=False)
        results[kind] = (nf.predict(), nf.predict_insample(step_size=6),
                         nf.cross_validation(df, n_windows=2, verbose=False),
                         nf.make_future_dataframe(), nf)
    for ours, theirs in zip(results["pandas"][:4], results["polars"][:4], strict=True):
        assert isinstance(theirs, pl.DataFrame) and theirs.columns == ours.columns.tolist()
        for col in ours.columns:
            np.testing.assert_array_equal(theirs.get_column(col).to_numpy(), ours[col].to_numpy())
    nf = results["polars"][4]
    assert isinstance(nf.predict(df=data), pd.DataFrame)  # a pandas df gets a pandas answer
    missing = nf.get_missing_future(pl.DataFrame({"unique_id": ["s0"], "ds": [data.ds.max()]}))
    assert isinstance(missing, pl.DataFrame) and len(missing) == 18
    nf.save(tmp_path / "m")
    monkeypatch.setitem(__import__("sys").modules, "polars", None)  # polars not installed
    with pytest.raises(ValueError, match="polars is not installed.*ndwork\\[polars\\]"):
        NeuralForecast.load(tmp_path / "m").predict()


def test_window_scalers_minmax1_and_invariant_as_neuralforecast_defines_them():
    from ndwork.data.windows import scale_windows

    rng = np.random.default_rng(1)
    y = rng.gamma(2.0, 5.0, (4, 15)).astype(np.float64)
    temporal = rng.normal(3.0, 2.0, (4, 15, 2))
    z, t, shift, scale = scale_windows(y, temporal, 10, "minmax1")
    np.testing.assert_allclose(z[:, :10].min(axis=1), -1, atol=1e-6)
    np.testing.assert_allclose(z[:, :10].max(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(t[:, :10].min(axis=1), -1, atol=1e-6)
    np.testing.assert_allclose(z * scale[:, None] + shift[:, None], y, rtol=1e-12)
    z, t, shift, scale = scale_windows(y, temporal, 10, "invariant")
    median = np.median(y[:, :10], axis=1)  # 10 points: torch's lower middle value
    lower = np.sort(y[:, :10], axis=1)[:, 4]
    assert not np.allclose(median, lower)
    np.testing.assert_allclose(shift, lower)
    np.testing.assert_allclose(np.arcsinh((y - shift[:, None]) / scale[:, None]), z)
    np.testing.assert_allclose(np.sinh(z) * scale[:, None] + shift[:, None], y, rtol=1e-12)


def test_revin_is_standard_scaling_with_a_learnable_shift_and_scale(panel):
    """NeuralForecast's RevIN adds 2 parameters that a point loss, trained in the scaled
    units, never moves: its forecasts are standard scaling's."""
    from ndwork.losses import DistributionLoss

    data = panel.drop(columns="promo")
    forecasts = {}
    for kind in ("standard", "revin"):
        model = MLP(h=6, input_size=12, scaler_type=kind, **MLP_SMALL)
        forecasts[kind] = NeuralForecast([model], freq="D").fit(data, verbose=False).predict()
    assert model.num_parameters() == MLP(h=6, input_size=12, **MLP_SMALL).num_parameters() + 2
    np.testing.assert_allclose(forecasts["revin"]["MLP"], forecasts["standard"]["MLP"],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="revin.*scaler_type='standard'"):
        MLP(h=6, input_size=12, scaler_type="revin", loss=DistributionLoss("Normal"))


@pytest.mark.parametrize("kind", ["minmax1", "invariant"])
def test_models_train_and_forecast_with_the_other_window_scalers(panel, kind):
    data = panel.drop(columns="promo")
    nf = NeuralForecast([NHITS(h=6, input_size=12, scaler_type=kind, **SMALL)], freq="D")
    cv = nf.cross_validation(data, n_windows=2, step_size=6, verbose=False)
    assert np.abs(cv["NHITS"] - cv["y"]).mean() < cv["y"].std()


# NeuralForecast 3.3's parameter counts (model.parameters(), measured in the peers
# environment) with futr_exog_list=["day", "promo"], "day" categorical (7 categories) and,
# where the model takes static inputs, stat_exog_list=["region", "size"] with "region"
# categorical (2): h=6, input_size=12 (TCN 24), defaults otherwise (NBEATSx with an
# exogenous stack).
CATEGORICAL_COUNTS = {"MLP": 1183799, "NHITS": 2518111, "NBEATSx": 2578579, "TiDE": 828127,
                      "RNN": 68530, "LSTM": 221746, "GRU": 395674, "TCN": 152136,
                      "BiTCN": 10360, "DilatedRNN": 486016, "DeepAR": 204729,
                      "DeepNPTS": 7609, "Informer": 343561, "VanillaTransformer": 294025}


def _categorical_model(name, **options):
    from ndwork.models import MODELS

    cls = MODELS[name]
    kw = dict(h=6, input_size=24 if name == "TCN" else 12, futr_exog_list=["day", "promo"],
              cat_exog_list=["day"], categorical_cardinalities={"day": 7, "region": 2})
    if cls.EXOGENOUS_STAT:
        kw.update(stat_exog_list=["region", "size"], cat_exog_list=["day", "region"])
    if name == "NBEATSx":
        kw.update(stack_types=["identity", "trend", "exogenous"])
    return cls(**{**kw, **options})


@pytest.fixture(scope="module")
def categorical_data(panel):
    df = panel.assign(day=np.array(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])[
        panel.ds.dt.day_of_week])
    static = pd.DataFrame({"unique_id": ["s0", "s1", "s2"], "region": ["north", "south", "north"],
                           "size": [1.0, 2.0, 3.0]})
    return df, static


@pytest.mark.parametrize("name", sorted(CATEGORICAL_COUNTS))
def test_categorical_embeddings_count_and_train_as_neuralforecasts(name, categorical_data):
    from ndwork.training.trainer import layout

    df, static = categorical_data
    model = _categorical_model(name, max_steps=3, enable_progress_bar=False)
    assert model.num_parameters() == CATEGORICAL_COUNTS[name]
    nf = NeuralForecast([model], freq="D")
    nf.fit(df, static_df=static, verbose=False)
    assert nf.categorical_vocabulary["day"] == sorted(["mon", "tue", "wed", "thu", "fri", "sat",
                                                       "sun"])
    trained = layout(model).views(nf.states[0].params)
    initial = layout(model).views(model.spec.initialize(np.random.default_rng(model.random_seed)))
    tables = [k for k in model.spec.shapes if k.startswith("cat_embeddings.")]
    assert len(tables) == (2 if model.EXOGENOUS_STAT else 1)
    if name != "TiDE":  # NF's TiDE: a LayerNorm over its single output blocks every input
        assert all(np.abs(trained[k] - initial[k]).max() > 0 for k in tables)
    future = nf.make_future_dataframe().assign(day="holiday", promo=0.0)  # unseen category
    fc = nf.predict(futr_df=future)
    assert np.isfinite(fc[repr(model)]).all()


def test_categorical_columns_bypass_the_scalers_and_survive_save_load(categorical_data,
                                                                       tmp_path):
    df, static = categorical_data
    nf = NeuralForecast([_categorical_model("MLP", max_steps=5, scaler_type="robust",
                                            **{k: v for k, v in MLP_SMALL.items()
                                               if k != "max_steps"})],
                        freq="D", local_scaler_type="standard", local_static_scaler_type="minmax")
    nf.fit(df, static_df=static, verbose=False)
    day = nf.panel.temporal[:, nf.panel.temporal_cols.index("day")]
    assert set(np.unique(day)) == set(range(1, 8))  # codes, not scaled
    assert set(nf.panel.static[:, nf.panel.static_cols.index("region")]) == {1.0, 2.0}
    future = nf.make_future_dataframe().assign(day="mon", promo=0.0)
    nf.save(tmp_path / "m")
    loaded = NeuralForecast.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.predict(futr_df=future), nf.predict(futr_df=future))


def test_categorical_bad_input_names_the_fix(categorical_data):
    from ndwork.models import NBEATS

    df, static = categorical_data
    model = _categorical_model("MLP", max_steps=2, categorical_cardinalities={"day": 5,
                                                                               "region": 2})
    with pytest.raises(ValueError, match=r"'day' has 7 distinct values.*declare at least 7"):
        NeuralForecast([model], freq="D").fit(df, static_df=static, verbose=False)
    with pytest.raises(ValueError, match="categorical_cardinalities has no entry for \\['day'\\]"):
        MLP(h=6, input_size=12, futr_exog_list=["day"], cat_exog_list=["day"])
    with pytest.raises(ValueError, match="\\['day'\\] must also be listed"):
        MLP(h=6, input_size=12, cat_exog_list=["day"], categorical_cardinalities={"day": 7})
    with pytest.raises(ValueError, match="NBEATS does not embed categorical"):
        NBEATS(h=6, input_size=12, cat_exog_list=["day"], categorical_cardinalities={"day": 7})
    with pytest.raises(ValueError, match="cat_emb_dim='wide'"):
        _categorical_model("MLP", cat_emb_dim="wide")


def test_cross_validation_options_as_neuralforecast(panel):
    """test_size instead of n_windows; a fitted NeuralForecast's trainings continue from
    its weights unless use_init_models=True; use_fitted=True forecasts without training."""
    data = panel.drop(columns="promo")

    def fresh():
        return NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")

    unfitted = fresh().cross_validation(data, n_windows=None, test_size=16, step_size=5,
                                        verbose=False)
    assert unfitted.cutoff.nunique() == 3  # (16 - 6) / 5 + 1 windows
    nf = fresh().fit(data, verbose=False)
    fitted_params = nf.states[0].params.copy()
    restarted = nf.cross_validation(data, n_windows=3, step_size=5, use_init_models=True,
                                    verbose=False)
    pd.testing.assert_frame_equal(restarted, unfitted)
    nf = fresh().fit(data, verbose=False)
    continued = nf.cross_validation(data, n_windows=3, step_size=5, verbose=False)
    assert not np.allclose(continued["MLP"], unfitted["MLP"])
    nf = fresh().fit(data, verbose=False)
    evaluated = nf.cross_validation(data, n_windows=3, step_size=5, use_fitted=True)
    np.testing.assert_array_equal(nf.states[0].params, fitted_params)  # nothing trained
    for cutoff in evaluated.cutoff.unique():
        expected = nf.predict(df=data[data.ds <= cutoff])
        np.testing.assert_allclose(evaluated.loc[evaluated.cutoff == cutoff, "MLP"],
                                   expected["MLP"], rtol=1e-6)
    with pytest.raises(ValueError, match="use_fitted=True.*refit=False"):
        nf.cross_validation(data, n_windows=2, use_fitted=True, refit=True)
    with pytest.raises(ValueError, match="test_size of h \\+ k \\* step_size"):
        nf.cross_validation(data, n_windows=None, test_size=9, step_size=5)


def test_cross_validation_y_is_dfs_own_and_predict_insample_the_trained_part(panel):
    """As NeuralForecast: cross-validation's y is df's column (its dtype, its exact
    values); after a cross-validation without refit, predict_insample forecasts the
    history before its windows, and after a fit the whole history again."""
    data = panel.drop(columns="promo")
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    for y in (data.y * 1.000001, (data.y * 100).round().astype(np.int64)):
        cv = nf.cross_validation(data.assign(y=y), n_windows=3, step_size=5, verbose=False)
        assert cv.y.dtype == y.dtype
        merged = cv.merge(data.assign(y=y), on=["unique_id", "ds"], suffixes=("", "_df"))
        np.testing.assert_array_equal(merged.y, merged.y_df)
    last = data.groupby("unique_id").ds.max()
    held_out = pd.Timedelta(days=6 + 2 * 5)  # h + (n_windows - 1) * step_size
    insample = nf.predict_insample(step_size=6)
    assert (insample.groupby("unique_id").ds.max() == last - held_out).all()
    nf.fit(data, verbose=False)
    assert (nf.predict_insample(step_size=6).groupby("unique_id").ds.max() == last).all()


def test_a_categorical_id_column_stays_categorical(panel):
    data = panel.drop(columns="promo").astype({"unique_id": "category"})
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    frames = [nf.cross_validation(data, n_windows=2, verbose=False), nf.fit(data).predict(),
              nf.predict_insample(step_size=6), nf.make_future_dataframe()]
    for frame in frames:
        assert frame["unique_id"].dtype == data["unique_id"].dtype


def test_neuralforecasts_example_data_and_first_tutorial():
    """NeuralForecast's getting-started script with the import changed: its example
    frames, a future exogenous column of the panel, month-end dates."""
    from ndwork.utils import AirPassengersDF, AirPassengersPanel, AirPassengersStatic

    assert AirPassengersDF.shape == (144, 3) and AirPassengersDF.ds.iloc[1] == pd.Timestamp(
        "1949-02-28")
    assert AirPassengersPanel.columns.tolist() == ["unique_id", "ds", "y", "trend", "y_[lag12]"]
    assert AirPassengersStatic.shape == (2, 3)
    train = AirPassengersPanel[AirPassengersPanel.ds < "1960-01-01"]
    future = AirPassengersPanel[AirPassengersPanel.ds >= "1960-01-01"].drop(columns="y")
    nf = NeuralForecast([MLP(h=12, input_size=24, futr_exog_list=["trend", "y_[lag12]"],
                             stat_exog_list=["airline1"], **MLP_SMALL)], freq="ME")
    fc = nf.fit(train, static_df=AirPassengersStatic).predict(futr_df=future)
    assert len(fc) == 24 and fc.ds.max() == pd.Timestamp("1960-12-31")


def test_cross_validation_beyond_the_horizon_and_on_the_stored_data(panel):
    """NeuralForecast's cross_validation(h=...): each window forecast as predict(h=...)
    forecasts it; df=None cross-validates the data the fit stored."""
    data = panel.drop(columns="promo")
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    cv = nf.cross_validation(data, n_windows=2, step_size=4, h=10, verbose=False)
    assert len(cv) == 3 * 2 * 10
    cutoff = cv.cutoff.min()
    expected = nf.predict(df=data[data.ds <= cutoff], h=10)
    np.testing.assert_allclose(cv.loc[cv.cutoff == cutoff, "MLP"], expected["MLP"], rtol=1e-5)
    with pytest.raises(ValueError, match="h must be an integer of at least the models' "
                                         "horizon 6"):
        nf.cross_validation(data, h=4)
    with pytest.raises(ValueError, match="cannot calibrate conformal intervals"):
        nf.cross_validation(data, h=10, prediction_intervals=PredictionIntervals())
    stored = nf.fit(data, verbose=False).cross_validation(n_windows=2, step_size=4,
                                                          verbose=False)
    given = nf.cross_validation(data, n_windows=2, step_size=4, verbose=False)
    pd.testing.assert_frame_equal(stored[["unique_id", "ds", "cutoff"]],
                                  given[["unique_id", "ds", "cutoff"]])
    np.testing.assert_allclose(stored.y, given.y, rtol=1e-6)  # float32: the stored data
    with pytest.raises(ValueError, match="pass df"):
        nf.cross_validation(refit=True)


def test_neuralforecasts_other_options_are_accepted_or_refused_by_name(panel, tmp_path):
    """verbose where NeuralForecast has it; its data loader options do nothing, and say
    so; its Spark options are refused, naming ndwork's dask ones."""
    data = panel.drop(columns="promo")
    nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
    with pytest.raises(ValueError, match="Spark options.*fit\\(distributed=...\\)"):
        nf.fit(data, distributed_config=object())
    nf.fit(data, verbose=False)
    quiet = nf.predict(verbose=True)
    with pytest.warns(UserWarning, match="predict\\(batch_size=...\\): ndwork has no data "
                                         "loader"):
        pd.testing.assert_frame_equal(nf.predict(batch_size=32), quiet)
    with pytest.raises(ValueError, match="Spark options"):
        nf.simulate(engine="spark")
    nf.save(tmp_path / "run")
    loaded = NeuralForecast.load(tmp_path / "run", verbose=True, allow_pickle=False)
    pd.testing.assert_frame_equal(loaded.predict(), quiet)


def test_calendar_features_as_neuralforecast_defines_them():
    """augment_calendar_df: NeuralForecast's features in [-0.5, 0.5] (weeks by ISO week,
    which NeuralForecast reads from an attribute pandas 2 removed), added by position
    whatever df's index, and a clear error for a frequency without features."""
    from ndwork.utils import augment_calendar_df

    df = pd.DataFrame({"unique_id": "a", "y": 1.0,
                       "ds": pd.date_range("2019-12-29", periods=60, freq="W")}, index=range(5, 65))
    out, columns = augment_calendar_df(df, "W")
    assert columns == ["monthday", "yearweek"] and out.index.equals(df.index)
    np.testing.assert_allclose(out[columns].iloc[:2], [[28 / 30 - 0.5, 51 / 52 - 0.5],
                                                       [4 / 30 - 0.5, -0.5]])
    assert out[columns].abs().max().max() <= 0.5
    hourly, columns = augment_calendar_df(df.assign(ds=pd.date_range("2020-03-01 05:00",
                                                                      periods=60, freq="h")), "h")
    assert columns == ["dayhour", "weekday", "monthday", "yearday"]
    assert hourly["dayhour"].iloc[0] == 5 / 23 - 0.5 and hourly["weekday"].iloc[0] == 0.5
    with pytest.raises(ValueError, match="freq='Y'.*calendar features exist for"):
        augment_calendar_df(df, "Y")


@pytest.fixture(scope="module")
def gappy(panel):
    """The panel with 10% of its points missing (NeuralForecast's available_mask)."""
    df = panel.drop(columns="promo").assign(available_mask=1.0)
    missing = np.random.default_rng(0).random(len(df)) < 0.1
    df.loc[missing, "available_mask"] = 0.0
    df.loc[missing, "y"] = np.nan
    return df, missing


def test_missing_points_are_unused_and_masked(gappy):
    """Whatever the missing rows hold never reaches the model; cross-validation's y is
    NaN there; without available_mask a NaN names it."""
    df, missing = gappy
    states = []
    for filler in (np.nan, 1e9):
        nf = NeuralForecast([MLP(h=6, input_size=12, scaler_type="robust", val_check_steps=10,
                                 **MLP_SMALL)], freq="D")
        nf.fit(df.assign(y=np.where(missing, filler, df.y)), val_size=6, verbose=False)
        states.append(nf.states[0])
    np.testing.assert_array_equal(states[0].params, states[1].params)
    assert states[0].valid_losses == states[1].valid_losses and np.isfinite(
        states[0].valid_losses[0][1])
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    observed = df.set_index(["unique_id", "ds"]).available_mask
    keys = list(zip(cv.unique_id, cv.ds, strict=True))
    np.testing.assert_array_equal(cv.y.isna().to_numpy(), observed.loc[keys].to_numpy() == 0)
    assert np.isfinite(cv.MLP).all()
    with pytest.raises(ValueError, match="'y' of df has .* NaN.*'available_mask'"):
        nf.fit(df.drop(columns="available_mask"), verbose=False)
    with pytest.raises(ValueError, match="'available_mask' of df must be 0 or 1"):
        nf.fit(df.assign(available_mask=0.5), verbose=False)


def test_missing_points_leave_the_loss_and_the_window_scaler(gappy):
    from ndwork.data import Panel
    from ndwork.training.trainer import build_batch

    df, _ = gappy
    panel = Panel.from_frame(df, "D")
    w = gather_windows_of(panel)
    batch, shift, _ = build_batch(MLP(h=6, input_size=12, scaler_type="standard"), w["y"],
                                  w["temporal"], [], panel.static[w["series"]], [], 12,
                                  w["available"])
    np.testing.assert_array_equal(batch["outsample_mask"], w["available"][:, 12:])
    observed = w["available"][:, :12] > 0
    expected = np.array([row[seen].mean() for row, seen in zip(w["y"][:, :12], observed,
                                                                strict=True)])
    np.testing.assert_allclose(shift, expected, rtol=1e-5)


def gather_windows_of(panel):
    from ndwork.data import gather_windows

    starts = panel.indptr[:-1] + np.arange(panel.n_series) * 7
    return gather_windows(panel, starts, 18)


def test_sample_weight_weighs_each_windows_loss(panel):
    """NeuralForecast's sample_weight: each window's loss weighed by its mean over the
    horizon; scaling every weight changes nothing (the losses are weighted means)."""
    from ndwork.data import Panel

    data = panel.drop(columns="promo")
    losses = []  # (the losses: Adam amplifies round-off in near-zero gradients)
    for weight in (1.0, 3.0):  # (windows past a series' end average zeros in, as in NF)
        frame = data.assign(sample_weight=weight)
        nf = NeuralForecast([MLP(h=6, input_size=12, **MLP_SMALL)], freq="D")
        losses.append([loss for _, loss in nf.fit(frame, verbose=False).states[0].train_losses])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    weights = np.where(data.unique_id == "s1", 0.0, 1.0) + np.arange(len(data)) % 2
    panel_w = Panel.from_frame(data.assign(sample_weight=weights), "D")
    from ndwork.training.trainer import make_batch

    windows = np.array([[panel_w.indptr[1] + 3, 1], [5, 0]])
    batch = make_batch(MLP(h=6, input_size=12), panel_w, windows)
    np.testing.assert_allclose(batch["outsample_mask"][0], 0.5)  # s1: weights 0 and 1
    np.testing.assert_allclose(batch["outsample_mask"][1], 1.5)  # s0: weights 1 and 2
    with pytest.raises(ValueError, match="'sample_weight' of df must be a finite number >= 0"):
        NeuralForecast([MLP(h=6, input_size=12)], freq="D").fit(
            data.assign(sample_weight=-1.0), verbose=False)


def _explained(panel, model, **options):
    nf = NeuralForecast([model], freq="D")
    nf.fit(panel, verbose=False)
    future = nf.make_future_dataframe().assign(promo=0.3)
    forecasts, explanations = nf.explain(futr_df=future, **options)
    return nf, forecasts, explanations[repr(model)]


def test_integrated_gradients_add_up_to_the_forecast_minus_the_baseline(panel):
    """Completeness: every input's attribution summed is the forecast minus the
    all-zero input's (in the forecast's units, window scaler included)."""
    model = MLP(h=6, input_size=12, futr_exog_list=["promo"], scaler_type="robust",
                **MLP_SMALL)
    _, forecasts, parts = _explained(panel, model)
    assert parts["insample"].shape == (3, 6, 1, 1, 12, 2)
    assert parts["futr_exog"].shape == (3, 6, 1, 1, 1, 18)
    assert parts["hist_exog"] is None and parts["stat_exog"] is None
    total = (parts["insample"].sum(axis=(-1, -2)) + parts["futr_exog"].sum(axis=(-1, -2)))
    change = forecasts["MLP"].to_numpy().reshape(3, 6) - parts["baseline_predictions"][..., 0, 0]
    # (50 Gauss-Legendre points over a ReLU network's kinks: within 1% of the largest change)
    np.testing.assert_allclose(total[:, :, 0, 0], change, rtol=0, atol=1e-2 * np.abs(
        change).max())


def test_input_x_gradient_is_exact_for_a_linear_model(panel):
    from ndwork.models import NLinear

    model = NLinear(h=6, input_size=12, max_steps=20, enable_progress_bar=False)
    nf = NeuralForecast([model], freq="D").fit(panel.drop(columns="promo"), verbose=False)
    forecasts, explanations = nf.explain(horizons=[0, 5], explainer="InputXGradient")
    parts = explanations["NLinear"]
    assert parts["insample"].shape == (3, 2, 1, 1, 12, 2)
    assert (parts["insample"][..., 1] == 0).all()  # the mask: a constant to ndwork's models
    change = (forecasts["NLinear"].to_numpy().reshape(3, 6)[:, [0, 5]]
              - parts["baseline_predictions"][..., 0, 0])
    np.testing.assert_allclose(parts["insample"][..., 0].sum(axis=-1)[:, :, 0, 0], change,
                               rtol=1e-5, atol=1e-6)


def test_explain_sums_categorical_embeddings_per_column_and_names_its_limits(
        categorical_data, panel):
    from ndwork.losses import DistributionLoss

    df, static = categorical_data
    model = _categorical_model("MLP", max_steps=3, enable_progress_bar=False)
    nf = NeuralForecast([model], freq="D").fit(df, static_df=static, verbose=False)
    future = nf.make_future_dataframe().assign(day="mon", promo=0.0)
    _, explanations = nf.explain(futr_df=future, horizons=[2], explainer="InputXGradient")
    parts = explanations["MLP"]
    assert parts["futr_exog"].shape == (3, 1, 1, 1, 2, 18)  # day, promo: one value each
    assert parts["stat_exog"].shape == (3, 1, 1, 1, 2)
    with pytest.raises(ValueError, match="ShapleyValueSampling"):
        nf.explain(futr_df=future, explainer="ShapleyValueSampling")
    with pytest.raises(ValueError, match="horizons=\\[6\\]"):
        nf.explain(futr_df=future, horizons=[6])
    normal = NeuralForecast([MLP(h=6, input_size=12, loss=DistributionLoss("Normal"),
                                 **MLP_SMALL)], freq="D").fit(panel.drop(columns="promo"),
                                                              verbose=False)
    with pytest.warns(UserWarning, match="explain skips MLP: a distribution loss"), \
            pytest.raises(ValueError, match="no model here can be explained"):
        normal.explain()


def test_val_monitor_chooses_what_early_stopping_watches(panel):
    data = panel.drop(columns="promo")
    options = dict(h=6, input_size=12, val_check_steps=2, early_stop_patience_steps=1,
                   learning_rate=0.0, **MLP_SMALL)  # nothing improves: stop at the 2nd check
    for monitor in ("ptl/val_loss", "valid_loss", "train_loss"):
        nf = NeuralForecast([MLP(val_monitor=monitor, **options)], freq="D")
        nf.fit(data, val_size=6, verbose=False)
        state = nf.states[0]
        assert len(state.train_losses) == 4
        watched = state.train_losses[1][1] if monitor == "train_loss" else state.valid_losses[0][1]
        assert state.best_valid == watched
    with pytest.raises(ValueError, match="val_monitor='val_mae' is not supported"):
        MLP(h=6, input_size=12, val_monitor="val_mae")


def test_nbeats_n_polynomials_is_accepted_and_ignored_as_in_neuralforecast():
    from ndwork.models import NBEATS

    with pytest.warns(UserWarning, match="n_polynomials=.*deprecated and ignored"):
        model = NBEATS(h=6, input_size=12, n_polynomials=3)
    assert model.num_parameters() == NBEATS(h=6, input_size=12).num_parameters()
