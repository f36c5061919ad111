"""Transformer models: parameter counts, training, and flash vs naive attention."""

import numpy as np
import pandas as pd
import pytest

import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.models import VanillaTransformer

# NeuralForecast 3.3, h=12, input_size=24, defaults
NEURALFORECAST_PARAMETER_COUNTS = {VanillaTransformer: 292_449}
ATTENTION_RTOL = 1e-5
LOSS_ATOL = 1e-4

SMALL = dict(hidden_size=16, n_head=2, conv_hidden_size=8, windows_batch_size=16,
             learning_rate=1e-3, scaler_type="standard")


@pytest.mark.parametrize("cls,count", NEURALFORECAST_PARAMETER_COUNTS.items(),
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_parameter_count_matches_neuralforecast(cls, count):
    assert cls(h=12, input_size=24).num_parameters() == count


def test_trains_saves_and_loads(tmp_path):
    df = air_passengers()
    nf = NeuralForecast([VanillaTransformer(h=12, input_size=24, max_steps=40, **SMALL)], "MS")
    nf.fit(df, verbose=False)
    losses = [loss for _, loss in nf.states[0].train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    fcst = nf.predict()
    nf.save(tmp_path / "vt")
    pd.testing.assert_frame_equal(fcst, NeuralForecast.load(tmp_path / "vt").predict())


def test_flash_and_naive_agree_on_training_and_prediction():
    df = synthetic_panel(3, 200, seed=2)
    runs = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            nf = NeuralForecast([VanillaTransformer(h=8, input_size=48, max_steps=10, dropout=0.0,
                                                    **SMALL)], "D")
            nf.fit(df, verbose=False)
            runs[kind] = nf
    losses = {k: np.array([loss for _, loss in nf.states[0].train_losses])
              for k, nf in runs.items()}
    np.testing.assert_allclose(losses["flash"], losses["naive"], atol=LOSS_ATOL)
    trained = runs["flash"]
    predictions = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            predictions[kind] = trained.predict().VanillaTransformer.to_numpy()
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
