"""The NeuralForecast-style front: cross-validation, validation, warm start, quiet runs."""

import os

import numpy as np
import pandas as pd
import pytest

from ndwork import NeuralForecast
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.losses import MQLoss
from ndwork.models import MLP, NHITS

SMALL_MLP = dict(hidden_size=32, windows_batch_size=64, scaler_type="robust")


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(3, 80, seed=1)


@pytest.mark.parametrize("refit", [False, True, 2])
def test_cross_validation_frame(panel, refit):
    nf = NeuralForecast([MLP(h=5, input_size=10, max_steps=5, **SMALL_MLP)], freq="D")
    cv = nf.cross_validation(panel, n_windows=3, step_size=4, refit=refit, verbose=False)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "MLP", "y"]
    assert len(cv) == 3 * 3 * 5
    one = cv[cv.unique_id == "s0"]
    cutoffs = sorted(one.cutoff.unique())
    last = panel[panel.unique_id == "s0"].ds.max()
    day = pd.Timedelta(days=1)
    assert cutoffs == [last - 5 * day - 8 * day, last - 5 * day - 4 * day, last - 5 * day]
    for cutoff, group in one.groupby("cutoff"):
        assert (group.ds > cutoff).all() and (group.ds <= cutoff + 5 * day).all()
        truth = panel.set_index(["unique_id", "ds"]).loc[[("s0", d) for d in group.ds], "y"]
        np.testing.assert_array_equal(group.y.to_numpy(), truth.to_numpy())


def test_cross_validation_refit_changes_the_fits(panel):
    kwargs = dict(h=5, input_size=10, max_steps=5, **SMALL_MLP)
    once = NeuralForecast([MLP(**kwargs)], "D").cross_validation(panel, 2, 5, verbose=False)
    every = NeuralForecast([MLP(**kwargs)], "D").cross_validation(panel, 2, 5, refit=True,
                                                                   verbose=False)
    first = once.cutoff == once.cutoff.min()
    np.testing.assert_allclose(once.MLP[first], every.MLP[first])  # same training data
    assert not np.allclose(once.MLP[~first], every.MLP[~first])  # retrained with more data


def test_validation_and_early_stopping(panel):
    model = NHITS(h=5, input_size=10, max_steps=400, val_check_steps=5,
                  early_stop_patience_steps=2, mlp_units=[[16, 16]], learning_rate=0.05)
    nf = NeuralForecast([model], "D").fit(panel, val_size=10, verbose=False)
    valid = nf.states[0].valid_losses
    assert len(valid) >= 3
    assert len(nf.states[0].train_losses) < 400  # stopped early
    best = min(range(len(valid)), key=lambda i: valid[i][1])
    assert len(valid) - 1 - best == 2  # stopped after `patience` checks without improvement


def test_predict_on_new_series(panel):
    nf = NeuralForecast([MLP(h=5, input_size=10, max_steps=5, **SMALL_MLP)], "D")
    nf.fit(panel, verbose=False)
    other = synthetic_panel(2, 30, seed=9).assign(unique_id=lambda d: "new-" + d.unique_id)
    fcst = nf.predict(df=other)
    assert sorted(fcst.unique_id.unique()) == ["new-s0", "new-s1"]
    assert fcst.ds.min() == other.ds.max() + pd.Timedelta(days=1)


def test_mqloss_columns_and_non_crossing_quantiles():
    df = air_passengers()
    model = NHITS(h=12, input_size=24, max_steps=30, loss=MQLoss(level=[80, 90]),
                  mlp_units=[[32, 32]], windows_batch_size=32, scaler_type="robust")
    fcst = NeuralForecast([model], "MS").fit(df, verbose=False).predict()
    columns = ["NHITS-median", "NHITS-lo-90", "NHITS-lo-80", "NHITS-hi-80", "NHITS-hi-90"]
    assert list(fcst.columns) == ["unique_id", "ds", *columns]
    ordered = fcst[["NHITS-lo-90", "NHITS-lo-80", "NHITS-median", "NHITS-hi-80", "NHITS-hi-90"]]
    assert (np.diff(ordered.to_numpy(), axis=1) >= 0).all()


def test_alias_and_learning_rate_decay():
    from ndwork.training.optimizers import learning_rate

    assert [learning_rate(1.0, s, 9, 3) for s in (0, 2, 3, 6, 8)] == [1, 1, 0.5, 0.25, 0.25]
    assert learning_rate(1.0, 500, 1000, -1) == 1.0
    nf = NeuralForecast([MLP(h=3, input_size=6, max_steps=2, alias="fast", hidden_size=8)], "MS")
    assert "fast" in nf.fit(air_passengers(), verbose=False).predict().columns


def test_warm_start_continues_instead_of_restarting():
    df = air_passengers()

    def model():
        return MLP(h=12, input_size=24, max_steps=20, **SMALL_MLP)

    nf = NeuralForecast([model()], "MS").fit(df, verbose=False)
    after_20 = nf.states[0].params.copy()
    nf.fit(df, warm_start=True, verbose=False)
    assert nf.states[0].optimizer.step == 40
    assert len(nf.states[0].train_losses) == 40
    assert not np.array_equal(nf.states[0].params, after_20)
    fresh = NeuralForecast([model()], "MS").fit(df, verbose=False)
    nf.fit(df, use_init_models=True, verbose=False)  # NeuralForecast's: fresh weights again
    np.testing.assert_array_equal(nf.states[0].params, fresh.states[0].params)
    nf.fit(df, verbose=False)  # re-fitting continues, as NeuralForecast's does
    assert nf.states[0].optimizer.step == 40
    nf.fit(df, warm_start=False, verbose=False)  # explicit: starts again
    np.testing.assert_array_equal(nf.states[0].params, fresh.states[0].params)


def test_neuralforecast_column_names_and_future_frames():
    df = air_passengers().rename(columns={"unique_id": "series", "ds": "month", "y": "value"})
    nf = NeuralForecast([MLP(h=6, input_size=12, max_steps=3, **SMALL_MLP)], "MS")
    nf.fit(df, id_col="series", time_col="month", target_col="value", verbose=False)
    fc = nf.predict()
    assert fc.columns.tolist() == ["series", "month", "MLP"]
    assert nf.predict(df=df).equals(fc)
    future = nf.make_future_dataframe()
    pd.testing.assert_frame_equal(future, fc[["series", "month"]])
    assert len(nf.get_missing_future(future.iloc[:4])) == 2
    assert nf.get_missing_future(future).empty
    cv = nf.cross_validation(df, n_windows=2, id_col="series", time_col="month",
                             target_col="value", verbose=False)
    assert cv.columns.tolist() == ["series", "month", "cutoff", "MLP", "value"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['series', 'month'"):
        nf.predict(df=air_passengers())


def test_fit_and_predict_are_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=5, **SMALL_MLP)], "MS")
    nf.fit(air_passengers(), verbose=False)
    nf.predict()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert os.listdir(tmp_path) == []


def test_progress_bar_when_verbose(capsys):
    NeuralForecast([MLP(h=12, input_size=24, max_steps=5, **SMALL_MLP)], "MS").fit(
        air_passengers())
    assert "MLP" in capsys.readouterr().err


def test_validation_in_rounds_measures_the_step_it_is_labelled_with(panel):
    """With sync_every > 1, a check inside a round used to see the round's last parameters."""
    def fit(sync_every):
        model = MLP(h=5, input_size=10, max_steps=8, val_check_steps=3, **SMALL_MLP)
        return NeuralForecast([model], freq="D").fit(panel, val_size=5, sync_every=sync_every,
                                                     verbose=False).states[0]

    stepwise, in_rounds = fit(1), fit(4)
    assert [s for s, _ in in_rounds.valid_losses] == [3, 6]
    np.testing.assert_allclose(in_rounds.valid_losses, stepwise.valid_losses, rtol=1e-6)
    np.testing.assert_array_equal(in_rounds.params, stepwise.params)


def test_valid_batch_size_bounds_the_series_per_forward(panel, monkeypatch):
    from ndwork.training import trainer

    rows_per_forward = []
    forward = trainer.forward

    def counting(model, params, batch, rng=None, buffers=None, inference=False):
        if rng is None:  # inference: validation and predict
            rows_per_forward.append(batch["insample_y"].shape[0])
        return forward(model, params, batch, rng, buffers, inference)

    monkeypatch.setattr(trainer, "forward", counting)

    def fit(valid_batch_size):
        rows_per_forward.clear()
        model = MLP(h=5, input_size=10, max_steps=4, val_check_steps=2,
                    valid_batch_size=valid_batch_size, **SMALL_MLP)
        nf = NeuralForecast([model], freq="D").fit(panel, val_size=7, verbose=False)
        return nf, nf.predict(), list(rows_per_forward)

    whole, whole_forecast, whole_rows = fit(None)
    chunked, chunked_forecast, chunked_rows = fit(2)
    windows = 7 - 5 + 1  # validation windows per series
    assert whole_rows == [3 * windows] * 2 + [3]  # 2 checks of 3 series, then predict
    assert chunked_rows == [2 * windows, windows] * 2 + [2, 1]
    np.testing.assert_allclose(chunked.states[0].valid_losses, whole.states[0].valid_losses,
                               rtol=1e-6)
    pd.testing.assert_frame_equal(chunked_forecast, whole_forecast)


@pytest.mark.parametrize("option", ["accelerator", "devices", "logger", "enable_checkpointing",
                                    "enable_model_summary", "deterministic", "callbacks",
                                    "val_check_interval"])
def test_a_trainer_option_ndwork_does_not_use_warns_once_naming_its_equivalent(option):
    with pytest.warns(UserWarning, match=f"{option}=.*does not use: .*(optimizations|callback|"
                                         f"checkpoint_every|num_parameters|random_seed|"
                                         f"val_check_steps)") as caught:
        MLP(h=2, input_size=4, **{option: "auto"})
    assert len(caught) == 1


def test_gradient_clipping_as_lightning_clips(panel):
    """gradient_clip_val: the whole gradient scaled to that L2 norm ("norm", torch's
    clip_grad_norm_) or each entry clamped ("value"); with SGD at learning rate 1, one
    step moves the weights by exactly the clipped gradient."""
    from ndwork.training.trainer import clipped, initial_state

    grads = np.array([3.0, -4.0, 0.5], np.float32)
    norm = MLP(h=2, input_size=4, gradient_clip_val=1.0)
    np.testing.assert_allclose(clipped(norm, grads), grads / (np.linalg.norm(grads) + 1e-6),
                               rtol=1e-6)
    np.testing.assert_array_equal(clipped(MLP(h=2, input_size=4, gradient_clip_val=10.0), grads),
                                  grads)
    value = MLP(h=2, input_size=4, gradient_clip_val=1.0, gradient_clip_algorithm="value")
    np.testing.assert_array_equal(clipped(value, grads), [1.0, -1.0, 0.5])
    moves = {}
    for limit in (None, 0.01):
        nf = NeuralForecast([MLP(h=6, input_size=12, max_steps=1, optimizer="sgd",
                                 learning_rate=1.0, gradient_clip_val=limit, **SMALL_MLP)],
                            freq="D")
        start = initial_state(nf.models[0]).params
        nf.fit(panel, verbose=False)
        moves[limit] = np.linalg.norm(nf.states[0].params.astype(np.float64) - start)
    assert moves[None] > 0.1 and moves[0.01] == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError, match="gradient_clip_val=-1 must be a non-negative"):
        MLP(h=2, input_size=4, gradient_clip_val=-1)
    with pytest.raises(ValueError, match="gradient_clip_algorithm='l2' must be 'norm' or "):
        MLP(h=2, input_size=4, gradient_clip_algorithm="l2")


def test_precision_maps_onto_the_optimizations(panel, monkeypatch):
    import contextlib
    import warnings

    from ndwork import config

    entered = []
    real = config.optimizations

    @contextlib.contextmanager
    def recording(**switches):
        entered.append(switches)
        with real(**switches) as opts:
            yield opts

    monkeypatch.setattr(config, "optimizations", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fp32 under Lightning's names is silent
        model = MLP(h=5, input_size=10, max_steps=2, precision="32-true", **SMALL_MLP)
    assert model.precision == "fp32"
    NeuralForecast([model], freq="D").fit(panel, verbose=False).predict()
    assert entered == [{"precision": "fp32"}] * 2  # fit and predict run under it
    assert MLP(h=2, input_size=4, precision="bf16-mixed").precision == "bf16"
    assert MLP(h=2, input_size=4, precision="16-mixed").precision == "fp16"
    with pytest.warns(UserWarning, match="precision='bf16-true': ndwork keeps float32 master"):
        assert MLP(h=2, input_size=4, precision="bf16-true").precision == "bf16"
    with pytest.raises(ValueError, match="precision='8' is not a precision ndwork knows"):
        MLP(h=2, input_size=4, precision="8")
    assert MLP(h=2, input_size=4, precision="64-true").precision == "fp64"


def test_predict_a_longer_horizon_as_neuralforecast():
    from ndwork.models import LSTM

    df = air_passengers()
    models = [MLP(h=6, input_size=12, max_steps=5, **SMALL_MLP),
              MLP(h=6, input_size=12, max_steps=5, loss=MQLoss(level=[80]), alias="mq",
                  **SMALL_MLP),
              LSTM(h=6, input_size=12, max_steps=5, recurrent=True, encoder_hidden_size=8)]
    nf = NeuralForecast(models, "MS").fit(df, verbose=False)
    short, long = nf.predict(), nf.predict(h=15)
    assert len(long) == 15 and long.ds.iloc[-1] == pd.Timestamp("1962-03-01")
    pd.testing.assert_frame_equal(long.iloc[:6].reset_index(drop=True), short)
    assert long.drop(columns=["unique_id", "ds"]).notna().all().all()
    # a direct model's next 6 steps are its forecast from its own median fed back
    fed = pd.concat([df, short[["unique_id", "ds"]].assign(y=short["MLP"])], ignore_index=True)
    again = nf.predict(df=fed)
    np.testing.assert_allclose(long["MLP"].iloc[6:12], again["MLP"], rtol=1e-5)
    with pytest.raises(ValueError, match="at least the models' horizon 6"):
        nf.predict(h=3)


def test_learning_rate_schedulers_as_pytorch_computes_them():
    import math

    from ndwork.training.optimizers import learning_rate

    def rates(scheduler, **kwargs):
        return [learning_rate(1.0, s, 100, -1, scheduler, kwargs) for s in range(12)]

    # PyTorch's closed forms at steps 0..11 (the rates torch's schedulers step through)
    assert rates("StepLR", step_size=5, gamma=0.5)[4:6] == [1.0, 0.5]
    assert rates("MultiStepLR", milestones=[3, 8], gamma=0.1)[::4] == pytest.approx([1, 0.1, 0.01])
    assert rates("ExponentialLR", gamma=0.9)[2] == pytest.approx(0.81)
    assert rates("CosineAnnealingLR", T_max=10)[5] == pytest.approx(0.5)
    assert rates("LinearLR", start_factor=0.5, total_iters=4)[:5] == pytest.approx(
        [0.5, 0.625, 0.75, 0.875, 1.0])
    assert rates("ConstantLR", factor=0.5, total_iters=2)[1:3] == [0.5, 1.0]
    assert rates(lambda step: math.exp(-step))[1] == pytest.approx(math.exp(-1))
    assert learning_rate(1.0, 50, 100, 2) == 0.5  # NeuralForecast's default, num_lr_decays


def test_lr_scheduler_trains_saves_and_explains_bad_options(tmp_path):
    from ndwork.training.trainer import initial_state

    df = air_passengers()
    model = MLP(h=6, input_size=12, max_steps=6, lr_scheduler="StepLR",
                lr_scheduler_kwargs={"step_size": 2, "gamma": 0.5}, **SMALL_MLP)
    nf = NeuralForecast([model], "MS").fit(df, verbose=False)
    nf.save(tmp_path / "run")
    assert NeuralForecast.load(tmp_path / "run").models[0].lr_scheduler == "StepLR"
    frozen = NeuralForecast([MLP(h=6, input_size=12, max_steps=6, lr_scheduler=lambda s: 0.0,
                                 **SMALL_MLP)], "MS")
    frozen.fit(df, verbose=False)
    np.testing.assert_array_equal(frozen.states[0].params,  # a zero rate never moves
                                  initial_state(frozen.models[0]).params)
    with pytest.raises(ValueError, match="lr_scheduler='OneCycle' is not one ndwork computes"):
        MLP(h=6, input_size=12, lr_scheduler="OneCycle")
    with pytest.raises(ValueError, match="step_size"):
        MLP(h=6, input_size=12, lr_scheduler="StepLR")
    with pytest.warns(UserWarning, match="no data loader"):
        MLP(h=6, input_size=12, dataloader_kwargs={"num_workers": 4})
