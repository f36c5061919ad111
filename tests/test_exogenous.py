"""Exogenous inputs: futr/hist/stat columns reach the models; missing ones raise."""

import numpy as np
import pandas as pd
import pytest

from ndwork import NeuralForecast
from ndwork.datasets import synthetic_panel
from ndwork.models import MLP, NBEATS, NHITS, NBEATSx, TiDE

H, L = 7, 14


@pytest.fixture(scope="module")
def data():
    df = synthetic_panel(4, 120, seed=3)
    t = np.tile(np.arange(120), 4)
    df["promo"] = ((t % 7) == 0).astype(np.float32)     # known in advance
    df["traffic"] = np.cos(t / 5).astype(np.float32)   # only known up to now
    static = pd.DataFrame({"unique_id": df.unique_id.unique(), "size": [1.0, 2.0, 3.0, 4.0]})
    train = df.groupby("unique_id").head(120 - H)
    futr = df.groupby("unique_id").tail(H)[["unique_id", "ds", "promo"]]
    return train, futr, static


EXOG = dict(futr_exog_list=["promo"], hist_exog_list=["traffic"], stat_exog_list=["size"])


@pytest.mark.parametrize("cls,extra", [(MLP, dict(hidden_size=32)),
                                       (NHITS, dict(mlp_units=[[32, 32]])),
                                       (NBEATSx, dict(mlp_units=[[32, 32]],
                                                      stack_types=["identity", "exogenous"],
                                                      n_blocks=[1, 1])),
                                       # With layernorm, TiDE's temporal decoder normalizes
                                       # one output per step to its bias (as NeuralForecast's
                                       # does), so only layernorm=False lets futr_df matter.
                                       (TiDE, dict(hidden_size=32, layernorm=False))],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_exogenous_models_train_and_predict(data, cls, extra):
    train, futr, static = data
    nf = NeuralForecast([cls(h=H, input_size=L, max_steps=20, windows_batch_size=64,
                             scaler_type="standard", **EXOG, **extra)], freq="D")
    nf.fit(train, static_df=static, verbose=False)
    fcst = nf.predict(futr_df=futr)
    assert len(fcst) == 4 * H and np.isfinite(fcst[cls.__name__]).all()
    # the future values are really used: other promos give another forecast
    changed = nf.predict(futr_df=futr.assign(promo=futr.promo + 5))
    assert not np.allclose(fcst[cls.__name__], changed[cls.__name__])


def test_missing_exogenous_columns_raise(data):
    train, futr, static = data
    model = MLP(h=H, input_size=L, max_steps=2, hidden_size=8, **EXOG)
    nf = NeuralForecast([model], freq="D")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['traffic'\]"):
        nf.fit(train.drop(columns="traffic"), static_df=static, verbose=False)
    with pytest.raises(ValueError, match="needs static_df"):
        nf.fit(train, verbose=False)
    with pytest.raises(ValueError, match=r"static_df is missing column\(s\) \['size'\]"):
        nf.fit(train, static_df=static.rename(columns={"size": "area"}), verbose=False)
    nf.fit(train, static_df=static, verbose=False)
    with pytest.raises(ValueError, match="pass futr_df"):
        nf.predict()
    with pytest.raises(ValueError, match=r"futr_df is missing column\(s\) \['promo'\]"):
        nf.predict(futr_df=futr.drop(columns="promo"))
    with pytest.raises(ValueError, match="does not cover the horizon: 1 of the 28"):
        nf.predict(futr_df=futr.iloc[:-1])


def test_model_without_exogenous_support_says_so():
    with pytest.raises(ValueError, match="NBEATS does not support futr_exog_list"):
        NBEATS(h=H, input_size=L, futr_exog_list=["promo"])
