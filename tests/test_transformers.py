"""Transformer models: parameter counts, training, and flash vs naive attention."""

import numpy as np
import pandas as pd
import pytest
from conftest import assert_loss_gradient

import ndwork
from ndwork import NeuralForecast
from ndwork.autodiff.noise import TrainingNoise
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.models import Informer, PatchTST, VanillaTransformer, iTransformer
from ndwork.training.trainer import build_batch, initial_state, loss_and_grad

# NeuralForecast 3.3, h=12, input_size=24, defaults
NEURALFORECAST_PARAMETER_COUNTS = {VanillaTransformer: 292_449, PatchTST: 404_623,
                                   Informer: 341_985}
ATTENTION_RTOL = 1e-5
LOSS_ATOL = 1e-4

TRAINING = dict(windows_batch_size=16, learning_rate=1e-3, scaler_type="standard")
SMALL = dict(hidden_size=16, n_head=2, conv_hidden_size=8, **TRAINING)
SMALL_ARCHITECTURES = {
    VanillaTransformer: dict(hidden_size=16, n_head=2, conv_hidden_size=8),
    PatchTST: dict(hidden_size=16, n_heads=2, linear_hidden_size=8, encoder_layers=2),
    Informer: dict(hidden_size=16, n_head=2, conv_hidden_size=8),
}


@pytest.mark.parametrize("cls,count", NEURALFORECAST_PARAMETER_COUNTS.items(),
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_parameter_count_matches_neuralforecast(cls, count):
    assert cls(h=12, input_size=24).num_parameters() == count


@pytest.mark.parametrize("cls", list(SMALL_ARCHITECTURES), ids=lambda c: c.__name__)
def test_trains_saves_and_loads(cls, tmp_path):
    df = air_passengers()
    nf = NeuralForecast([cls(h=12, input_size=24, max_steps=40, **SMALL_ARCHITECTURES[cls],
                             **TRAINING)], "MS")
    nf.fit(df, verbose=False)
    losses = [loss for _, loss in nf.states[0].train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    fcst = nf.predict()
    nf.save(tmp_path / "run")
    pd.testing.assert_frame_equal(fcst, NeuralForecast.load(tmp_path / "run").predict())


FLASH_CASES = [(VanillaTransformer, {}), (PatchTST, dict(res_attention=False)), (Informer, {})]


@pytest.mark.parametrize("cls,extra", FLASH_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_flash_and_naive_agree_on_training_and_prediction(cls, extra):
    df = synthetic_panel(3, 200, seed=2)
    runs = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            nf = NeuralForecast([cls(h=8, input_size=48, max_steps=10, dropout=0.0,
                                     **SMALL_ARCHITECTURES[cls], **extra, **TRAINING)], "D")
            nf.fit(df, verbose=False)
            runs[kind] = nf
    losses = {k: np.array([loss for _, loss in nf.states[0].train_losses])
              for k, nf in runs.items()}
    np.testing.assert_allclose(losses["flash"], losses["naive"], atol=LOSS_ATOL)
    trained = runs["flash"]
    predictions = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            predictions[kind] = trained.predict()[cls.__name__].to_numpy()
    scale = np.abs(predictions["naive"]).max()
    assert np.abs(predictions["flash"] - predictions["naive"]).max() <= ATTENTION_RTOL * scale


def test_futr_exog_reaches_the_model():
    df = synthetic_panel(2, 120, seed=4)
    df["event"] = (np.arange(len(df)) % 5 == 0).astype(np.float32)
    train = df.groupby("unique_id").head(110)
    futr = df.groupby("unique_id").tail(10)[["unique_id", "ds", "event"]]
    nf = NeuralForecast([VanillaTransformer(h=10, input_size=20, max_steps=5,
                                            futr_exog_list=["event"], **SMALL)], "D")
    nf.fit(train, verbose=False)
    a = nf.predict(futr_df=futr).VanillaTransformer
    b = nf.predict(futr_df=futr.assign(event=3.0)).VanillaTransformer
    assert not np.allclose(a, b)


GRADIENT_MODELS = {PatchTST: dict(patch_len=8, stride=4), Informer: {}}


@pytest.mark.parametrize("cls", list(GRADIENT_MODELS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_gradient_against_finite_differences(cls, training):
    """Whole model in float64; training mode normalizes with batch statistics (and
    Informer samples its queries from the same seed in every call)."""
    from ndwork.data import Panel, WindowSampler, gather_windows

    model = cls(h=4, input_size=16, dropout=0.0, **GRADIENT_MODELS[cls],
                **SMALL_ARCHITECTURES[cls])
    panel = Panel.from_frame(synthetic_panel(2, 60, seed=5), "D", dtype=np.float64)
    sampler = WindowSampler(panel, panel.lengths, 16, 4, 1, 2, 6)
    windows = sampler.sample(np.random.default_rng(0))
    w = gather_windows(panel, windows[:, 0], 20, windows[:, 1])
    batch, _, _ = build_batch(model, w["y"], w["temporal"], [], panel.static[w["series"]], [],
                              16)
    state = initial_state(model)
    params = state.params.astype(np.float64)

    def run(flat):
        rng = TrainingNoise(0, 0, np.arange(6)) if training else None
        return loss_and_grad(model, flat, batch, rng, model.spec.initial_buffers())

    assert_loss_gradient(run, params, seed=1)


def test_patchtst_running_statistics_are_trained_and_saved(tmp_path):
    nf = NeuralForecast([PatchTST(h=12, input_size=24, max_steps=5, **SMALL_ARCHITECTURES[PatchTST],
                                  **TRAINING)], "MS").fit(air_passengers(), verbose=False)
    buffers = nf.states[0].buffers
    assert any(not np.allclose(v, 0) for k, v in buffers.items() if k.endswith("running_mean"))
    nf.save(tmp_path / "p")
    loaded = NeuralForecast.load(tmp_path / "p").states[0].buffers
    for name, value in buffers.items():
        np.testing.assert_array_equal(loaded[name], value)


ITRANSFORMER = dict(hidden_size=16, n_heads=2, d_ff=8, **TRAINING)


def test_itransformer_parameter_count_matches_neuralforecast():
    assert iTransformer(h=12, input_size=24, n_series=4).num_parameters() == 6_324_748


def test_itransformer_trains_on_aligned_series_and_predicts_each(tmp_path):
    df = synthetic_panel(4, 150, seed=6)
    nf = NeuralForecast([iTransformer(h=6, input_size=24, n_series=4, max_steps=30,
                                      val_check_steps=10, **ITRANSFORMER)], "D")
    nf.fit(df, val_size=12, verbose=False)
    losses = [loss for _, loss in nf.states[0].train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert len(nf.states[0].valid_losses) == 3
    fcst = nf.predict()
    assert sorted(fcst.unique_id.unique()) == sorted(df.unique_id.unique())
    assert len(fcst) == 4 * 6 and np.isfinite(fcst.iTransformer).all()
    nf.save(tmp_path / "it")
    pd.testing.assert_frame_equal(fcst, NeuralForecast.load(tmp_path / "it").predict())
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    assert len(cv) == 2 * 4 * 6


def test_itransformer_series_mix():
    """Changing one series changes another's forecast: the model mixes series."""
    df = synthetic_panel(3, 100, seed=7)
    nf = NeuralForecast([iTransformer(h=4, input_size=16, n_series=3, max_steps=5,
                                      **ITRANSFORMER)], "D").fit(df, verbose=False)
    base = nf.predict()
    changed = df.copy()
    s0 = changed.unique_id == "s0"  # a change of shape: scalers would undo an affine one
    changed.loc[s0, "y"] += np.random.default_rng(0).normal(0, 5, int(s0.sum())).astype(np.float32)
    other = nf.predict(df=changed)
    keep = base.unique_id == "s1"
    assert not np.allclose(base.iTransformer[keep], other.iTransformer[keep])


def test_itransformer_flash_and_naive_agree():
    df = synthetic_panel(3, 120, seed=8)
    losses = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            nf = NeuralForecast([iTransformer(h=4, input_size=16, n_series=3, max_steps=10,
                                              dropout=0.0, **ITRANSFORMER)], "D")
            nf.fit(df, verbose=False)
            losses[kind] = [loss for _, loss in nf.states[0].train_losses]
    np.testing.assert_allclose(losses["flash"], losses["naive"], atol=LOSS_ATOL)


def test_itransformer_takes_series_of_different_lengths():
    df = synthetic_panel(3, 100, seed=9)
    ragged = df[~((df.unique_id == "s2") & (df.ds < df.ds.min() + pd.Timedelta(days=5)))]
    model = iTransformer(h=4, input_size=16, n_series=3, max_steps=2, **ITRANSFORMER)
    forecast = NeuralForecast([model], "D").fit(ragged, verbose=False).predict()
    assert len(forecast) == 12 and np.isfinite(forecast.iTransformer).all()
    with pytest.raises(ValueError, match="n_series=3, the data has 2"):
        NeuralForecast([model], "D").fit(df[df.unique_id != "s2"], verbose=False)
