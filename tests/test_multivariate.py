"""The multivariate and mixer models (TSMixer, TSMixerx, MLPMultivariate, SOFTS,
SOFTSSharp, TimeMixer, StemGNN, RMoK, XLinear, TimeXer) and KAN: NeuralForecast's parameter
counts, whole-model gradients, training and forecasting over aligned series."""

import numpy as np
import pandas as pd
import pytest
from conftest import assert_loss_gradient, exog_options

from ndwork import NeuralForecast
from ndwork.autodiff.noise import TrainingNoise
from ndwork.data import Panel, gather_windows
from ndwork.datasets import synthetic_panel
from ndwork.losses import MSE
from ndwork.models import (
    KAN,
    SOFTS,
    MLPMultivariate,
    RMoK,
    SOFTSSharp,
    StemGNN,
    TimeMixer,
    TimeXer,
    TSMixer,
    TSMixerx,
    XLinear,
)
from ndwork.training.trainer import build_batch, loss_and_grad

# NeuralForecast 3.3, h=12, input_size=24, n_series=4 (KAN: univariate), defaults otherwise
NEURALFORECAST_PARAMETER_COUNTS = {
    TSMixer: 3_436, TSMixerx: 41_548, MLPMultivariate: 1_198_128, SOFTS: 6_848_012,
    SOFTSSharp: 6_848_014, TimeMixer: 27_256, StemGNN: 4_221_980, RMoK: 4_476,
    XLinear: 138_524, KAN: 184_320, TimeXer: 8_444_428,
}
SMALL = {
    TSMixer: dict(ff_dim=6, dropout=0.3),
    TSMixerx: dict(ff_dim=6, dropout=0.2),
    MLPMultivariate: dict(hidden_size=12),
    SOFTS: dict(hidden_size=8, d_core=4, d_ff=8, e_layers=1),
    SOFTSSharp: dict(hidden_size=8, d_core=4, d_ff=8, e_layers=1),
    TimeMixer: dict(d_model=6, d_ff=8, e_layers=2, moving_avg=5),
    StemGNN: dict(multi_layer=1, dropout_rate=0.2),
    RMoK: dict(taylor_order=3, jacobi_degree=3),
    XLinear: dict(hidden_size=8, temporal_ff=8, channel_ff=6, temporal_dropout=0.1),
    KAN: dict(hidden_size=6, grid_size=3),
    TimeXer: dict(patch_len=4, hidden_size=8, n_heads=2, d_ff=8, e_layers=1, dropout=0.2),
}
N_SERIES = 3
EXOG = dict(futr_exog_list=["f", "g"], hist_exog_list=["x"], stat_exog_list=["s"])
EXOGENOUS = [cls for cls in SMALL if cls.EXOGENOUS_FUTR or cls.EXOGENOUS_HIST]



def build(cls, **options):
    if cls.MULTIVARIATE:
        options.setdefault("n_series", N_SERIES)
    return cls(**options)


@pytest.mark.parametrize("cls,count", NEURALFORECAST_PARAMETER_COUNTS.items(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_parameter_count_matches_neuralforecast(cls, count):
    options = dict(h=12, input_size=24)
    if cls.MULTIVARIATE:
        options["n_series"] = 4
    assert cls(**options).num_parameters() == count


def aligned_frame(n_series=N_SERIES, length=80, seed=0):
    df = synthetic_panel(n_series, length, seed)
    rng = np.random.default_rng(seed)
    for col in ("f", "g", "x"):
        df[col] = rng.normal(size=len(df)).astype(np.float32)
    static = pd.DataFrame({"unique_id": df.unique_id.unique(),
                           "s": np.arange(n_series, dtype=float)})
    return df, static


def aligned_batch(model, windows=3, seed=0):
    """A float64 batch of `windows` time offsets, each with every series (window-major)."""
    df, static = aligned_frame()
    cols = list(dict.fromkeys(model.futr_exog_list + model.hist_exog_list))
    panel = Panel.from_frame(df, "D", cols, static, model.stat_exog_list, dtype=np.float64)
    n = N_SERIES if model.MULTIVARIATE else 1
    span = model.input_size + model.h
    offsets = np.random.default_rng(seed).choice(panel.lengths[0] - span, windows, replace=False)
    series = np.tile(np.arange(n), windows) if model.MULTIVARIATE else np.arange(windows) % 3
    starts = panel.indptr[series] + np.repeat(offsets, n)
    w = gather_windows(panel, starts, span, series)
    batch, _, _ = build_batch(model, w["y"], w["temporal"], cols, panel.static[w["series"]],
                              model.stat_exog_list, model.input_size)
    return batch, windows


GRADIENT_CASES = [(cls, False, training) for cls in SMALL for training in (False, True)] + \
    [(cls, True, False) for cls in EXOGENOUS]


@pytest.mark.parametrize("cls,exog,training", GRADIENT_CASES, ids=lambda v: (
    v.__name__ if isinstance(v, type) else None))
def test_whole_model_gradient(cls, exog, training):
    """float64 central differences at 30 random parameters; training: dropout, batch
    statistics and SOFTS's drawn pooling from one seeded TrainingNoise in every call."""
    model = build(cls, h=4, input_size=12, loss=MSE(), scaler_type="standard", **SMALL[cls],
                  **(exog_options(cls, EXOG) if exog else {}))
    batch, windows = aligned_batch(model)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    params += np.random.default_rng(1).normal(0, 0.05, params.size)  # off symmetric inits

    def run(flat):
        rng = TrainingNoise(0, 0, np.arange(windows)) if training else None
        return loss_and_grad(model, flat, batch, rng, model.spec.initial_buffers())

    assert_loss_gradient(run, params, seed=2)


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.__name__)
def test_trains_forecasts_saves_and_cross_validates(cls, tmp_path):
    df, _ = aligned_frame(length=120, seed=3)
    df = df[["unique_id", "ds", "y"]]
    kwargs = dict(h=6, input_size=12, max_steps=25, learning_rate=3e-3, scaler_type="standard",
                  val_check_steps=10, **SMALL[cls])
    nf = NeuralForecast([build(cls, **kwargs)], "D").fit(df, val_size=6, verbose=False)
    losses = [loss for _, loss in nf.states[0].train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    fcst = nf.predict()
    name = cls.__name__
    assert list(fcst.columns) == ["unique_id", "ds", name]
    assert len(fcst) == N_SERIES * 6 and np.isfinite(fcst[name]).all()
    nf.save(tmp_path / "run")
    pd.testing.assert_frame_equal(fcst, NeuralForecast.load(tmp_path / "run").predict())
    again = NeuralForecast([build(cls, **kwargs)], "D").fit(df, val_size=6, verbose=False)
    pd.testing.assert_frame_equal(fcst, again.predict())
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    assert len(cv) == 2 * N_SERIES * 6 and np.isfinite(cv[name]).all()


MIXERS = [TSMixer, TSMixerx, MLPMultivariate, SOFTS, SOFTSSharp, TimeMixer, StemGNN, XLinear,
          TimeXer]


@pytest.mark.parametrize("cls", MIXERS, ids=lambda c: c.__name__)
def test_series_mix(cls):
    """A change in one series' history changes another series' forecast."""
    df, _ = aligned_frame(length=100, seed=7)
    df = df[["unique_id", "ds", "y"]]
    nf = NeuralForecast([build(cls, h=4, input_size=12, max_steps=3, **SMALL[cls])], "D")
    nf.fit(df, verbose=False)
    changed = df.copy()
    first = changed.unique_id == "s0"
    changed.loc[first, "y"] += np.random.default_rng(0).normal(0, 5, int(first.sum())).astype(
        np.float32)
    keep = nf.predict().unique_id == "s1"
    before = nf.predict()[cls.__name__][keep].to_numpy()
    after = nf.predict(df=changed)[cls.__name__][keep].to_numpy()
    # beyond float32 rounding (StemGNN's graph moves s1 by about 1e-5 of its level here)
    assert np.abs(after - before).max() > 1e-6 * np.abs(before).max()


def test_without_mixing_series_stay_apart():
    """RMoK and a channel-independent TimeMixer forecast each series from its own window."""
    df, _ = aligned_frame(length=100, seed=7)
    df = df[["unique_id", "ds", "y"]]
    changed = df.copy()
    first = changed.unique_id == "s0"
    changed.loc[first, "y"] *= 1.7
    for model in (RMoK(h=4, input_size=12, n_series=3, max_steps=3),
                  TimeMixer(h=4, input_size=12, n_series=3, max_steps=3, channel_independence=1,
                            **SMALL[TimeMixer])):
        nf = NeuralForecast([model], "D").fit(df, verbose=False)
        keep = nf.predict().unique_id != "s0"
        np.testing.assert_allclose(nf.predict()[repr(model)][keep],
                                   nf.predict(df=changed)[repr(model)][keep], rtol=1e-5)


def ragged_frame():
    """Three series ending on the same day: s1 starts 30 days late, s2 holds only 10
    points (fewer than input_size=12)."""
    df, _ = aligned_frame(length=60, seed=9)
    df = df[["unique_id", "ds", "y"]]
    start = df.ds.min()
    late = (df.unique_id == "s1") & (df.ds < start + pd.Timedelta(days=30))
    short = (df.unique_id == "s2") & (df.ds < start + pd.Timedelta(days=50))
    return df[~late & ~short].reset_index(drop=True)


@pytest.mark.parametrize("cls", [cls for cls in SMALL if cls.MULTIVARIATE],
                         ids=lambda c: c.__name__)
def test_series_of_different_lengths_train_and_forecast_as_neuralforecast_pads_them(cls):
    """NeuralForecast lines a multivariate model's series up on their last points and
    pads the shorter ones on the left (masked); so does ndwork."""
    df = ragged_frame()
    model = build(cls, h=4, input_size=12, max_steps=3, **SMALL[cls])
    nf = NeuralForecast([model], "D").fit(df, verbose=False)
    forecast = nf.predict()
    assert len(forecast) == 3 * 4 and np.isfinite(forecast[repr(model)]).all()
    assert (forecast.groupby("unique_id").ds.min() == df.ds.max() + pd.Timedelta(days=1)).all()
    cv = nf.cross_validation(df, n_windows=2, step_size=4)
    assert len(cv) == 2 * 3 * 4 and np.isfinite(cv[repr(model)]).all()
    with pytest.raises(ValueError, match="n_series=3, the data has 2"):
        NeuralForecast([model], "D").fit(df[df.unique_id != "s2"], verbose=False)


def test_a_multivariate_window_holds_every_series_at_the_same_distance_from_its_end():
    from ndwork.data import WindowSampler

    df = ragged_frame()
    panel = Panel.from_frame(df, "D")
    input_size, h = 12, 4
    sampler = WindowSampler(panel, panel.lengths, input_size, h, 1, 1, 64, multivariate=True)
    windows = sampler.sample(np.random.default_rng(0)).reshape(64, 3, 2)
    to_end = panel.indptr[1:][None, :] - windows[..., 0]  # rows from start to series end
    assert (to_end == to_end[:, :1]).all()
    # every window over the longest series is kept but the one whose horizon lies past
    # the end: all series together always hold a real input (s0 covers every position)
    assert sampler.counts.tolist() == [panel.lengths[0] - input_size] * 3
    w = gather_windows(panel, windows[..., 0].reshape(-1), input_size + h,
                       windows[..., 1].reshape(-1))
    short = w["series"] == 2  # before its 10 points: zeros, masked
    assert (w["available"][short].sum(axis=1) <= 10).all()
    assert (w["y"][short][w["available"][short] == 0] == 0).all()


def test_series_that_end_on_different_dates_train_with_a_warning():
    df = ragged_frame()
    df = df[~((df.unique_id == "s0") & (df.ds > df.ds.max() - pd.Timedelta(days=3)))]
    model = build(TSMixer, h=4, input_size=12, max_steps=2, **SMALL[TSMixer])
    with pytest.warns(UserWarning, match="end on different dates"):
        nf = NeuralForecast([model], "D").fit(df, verbose=False)
    forecast = nf.predict()  # each series from its own last date
    ends = df.groupby("unique_id").ds.max()
    assert (forecast.groupby("unique_id").ds.min() == ends + pd.Timedelta(days=1)).all()


@pytest.mark.parametrize("cls,options,match", [
    (TSMixer, dict(n_series=0), "n_series must be a positive integer"),
    (TimeMixer, dict(n_series=2, down_sampling_method="conv"), "re-draws its weights"),
    (TimeMixer, dict(n_series=2, decomp_method="fft"), "decomp_method"),
    (TimeMixer, dict(n_series=2, moving_avg=4), "odd positive integer"),
    (StemGNN, dict(n_series=2, n_stacks=3), "exactly 2 stacks"),
    (RMoK, dict(n_series=2, wavelet_function="haar"), "wavelet_function"),
    (KAN, dict(n_hidden_layers=2, hidden_size=[8]), "n_hidden_layers=2 sizes"),
    (SOFTSSharp, dict(n_series=2, pe_keep_prob=1.5), "probability"),
    (KAN, dict(shuffle_series=True), "forecasts each series alone"),
    (TimeXer, dict(n_series=2, patch_len=13), "patch_len=13 must be an integer between 1"),
    (TimeXer, dict(n_series=2, futr_exog_list=["f"]), "futr"),
])
def test_bad_options_say_what_to_fix(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls(h=4, input_size=12, **options)


def test_xlinear_warns_when_channel_ff_does_not_mix_whole_series():
    with pytest.warns(UserWarning, match="not a multiple of n_series"):
        XLinear(h=4, input_size=12, n_series=3, channel_ff=8)


def test_shuffle_series_presents_each_step_in_a_new_order(tmp_path):
    """shuffle_series=True: NeuralForecast's training (its loader permutes a step's
    series); by default every series keeps its position."""
    from ndwork.data import WindowSampler

    df, _ = aligned_frame(length=80, seed=4)
    df = df[["unique_id", "ds", "y"]]
    panel = Panel.from_frame(df, "D")
    orders = {}
    for shuffle in (False, True):
        sampler = WindowSampler(panel, panel.lengths, 12, 4, 1, 1, 5, multivariate=True,
                                shuffle_series=shuffle)
        rng = np.random.default_rng(0)
        steps = [sampler.sample(rng)[:, 1].reshape(5, N_SERIES) for _ in range(6)]
        assert all((s == s[0]).all() for s in steps)  # one order for all windows of a step
        orders[shuffle] = {tuple(s[0]) for s in steps}
    assert orders[False] == {tuple(range(N_SERIES))}
    assert len(orders[True]) > 1
    kwargs = dict(h=4, input_size=12, n_series=N_SERIES, max_steps=10, hidden_size=8,
                  temporal_ff=8, channel_ff=6)
    ordered = NeuralForecast([XLinear(**kwargs)], "D").fit(df, verbose=False)
    shuffled = NeuralForecast([XLinear(shuffle_series=True, **kwargs)], "D").fit(df, verbose=False)
    assert not np.allclose(ordered.states[0].params, shuffled.states[0].params)
    shuffled.save(tmp_path / "s")
    assert NeuralForecast.load(tmp_path / "s").models[0].shuffle_series is True
