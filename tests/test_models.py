"""Models: NeuralForecast's parameter counts, whole-model gradients, training, I/O."""

import numpy as np
import pandas as pd
import pytest
from conftest import exog_options

from ndwork import NeuralForecast
from ndwork.data import Panel, WindowSampler, gather_windows
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.models import (
    GRU,
    LSTM,
    MLP,
    NBEATS,
    NHITS,
    RNN,
    TCN,
    TFT,
    Autoformer,
    BiTCN,
    DeepNPTS,
    DilatedRNN,
    DLinear,
    FEDformer,
    NBEATSx,
    NLinear,
    TiDE,
    TimesNet,
    xLSTM,
)
from ndwork.training.trainer import build_batch, initial_state, loss_and_grad

# NeuralForecast 3.3, h=12, input_size=24, every other hyper-parameter at its default.
NEURALFORECAST_PARAMETER_COUNTS = {
    MLP: 1_087_500, NHITS: 2_437_725, NBEATS: 2_447_322, TiDE: 951_376, DLinear: 600,
    NLinear: 300, RNN: 66_433, GRU: 388_857, LSTM: 215_809, TCN: 148_909, BiTCN: 6_013,
    DilatedRNN: 480_301, xLSTM: 239_037,  # xLSTM: NeuralForecast's with the xlstm package
    DeepNPTS: 11_488, Autoformer: 290_561, FEDformer: 364_289, TimesNet: 4_688_645,
    TFT: 870_158,
}
FD_EPS, FD_RTOL = 1e-6, 1e-4

SMALL = {
    MLP: dict(hidden_size=16),
    NLinear: {},
    DLinear: dict(moving_avg_window=5),
    NBEATS: dict(mlp_units=[[16, 16]]),
    NBEATSx: dict(mlp_units=[[16, 16]], stack_types=["identity", "trend", "seasonality",
                                                     "exogenous"], n_blocks=[1, 1, 1, 1]),
    NHITS: dict(mlp_units=[[16, 16]]),
    TiDE: dict(hidden_size=16, decoder_output_dim=4, temporal_decoder_dim=8, dropout=0.0),
    RNN: dict(encoder_hidden_size=8, decoder_hidden_size=8),
    LSTM: dict(encoder_hidden_size=8, decoder_hidden_size=8),
    GRU: dict(encoder_hidden_size=8, decoder_hidden_size=8),
    TCN: dict(encoder_hidden_size=8, decoder_hidden_size=8, dilations=[1, 2, 4]),
    BiTCN: dict(hidden_size=4, dropout=0.0),
    DilatedRNN: dict(encoder_hidden_size=8, decoder_hidden_size=8, dilations=[[1, 2], [3]],
                     num_lr_decays=-1),
    xLSTM: dict(encoder_hidden_size=8, decoder_hidden_size=8),
    DeepNPTS: dict(hidden_size=8),
    Autoformer: dict(hidden_size=16, n_head=2, conv_hidden_size=8, MovingAvg_window=5),
    FEDformer: dict(hidden_size=16, conv_hidden_size=8, modes=3, MovingAvg_window=5),
    TimesNet: dict(hidden_size=8, conv_hidden_size=4, top_k=2, num_kernels=2),
    TFT: dict(hidden_size=8, n_head=2),
}
EXOG = dict(futr_exog_list=["f"], hist_exog_list=["x"], stat_exog_list=["s"])



@pytest.mark.parametrize("cls,count", NEURALFORECAST_PARAMETER_COUNTS.items(),
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_parameter_count_matches_neuralforecast(cls, count):
    assert cls(h=12, input_size=24).num_parameters() == count


def exog_frame(n_series=3, length=60, seed=0):
    df = synthetic_panel(n_series, length, seed)
    rng = np.random.default_rng(seed)
    df["f"] = np.sin(np.arange(len(df)) / 3).astype(np.float32)
    df["x"] = rng.normal(size=len(df)).astype(np.float32)
    static = pd.DataFrame({"unique_id": df.unique_id.unique(), "s": np.arange(n_series, dtype=float)})
    return df, static


def sample_batch(model, dtype=np.float64, seed=0, stage="train"):
    df, static = exog_frame()
    cols = list(dict.fromkeys(model.futr_exog_list + model.hist_exog_list))
    panel = Panel.from_frame(df, "D", cols, static, model.stat_exog_list, dtype=dtype)
    input_size, h = model.windows(stage)
    sampler = WindowSampler(panel, panel.lengths, input_size, h, 1, 3, 6)
    windows = sampler.sample(np.random.default_rng(seed))
    w = gather_windows(panel, windows[:, 0], input_size + h, windows[:, 1])
    batch, _, _ = build_batch(model, w["y"], w["temporal"], cols, panel.static[w["series"]],
                              model.stat_exog_list, input_size)
    return batch


GRADIENT_CASES = ([(cls, False) for cls in SMALL if cls is not NBEATSx]  # its exogenous
                  + [(cls, True) for cls in SMALL if cls.EXOGENOUS_FUTR])  # stack needs exog


@pytest.mark.parametrize("cls,exog", GRADIENT_CASES,
                         ids=lambda v: v.__name__ if isinstance(v, type) else ("exog" if v else ""))
def test_whole_model_gradient(cls, exog):
    from ndwork.losses import MSE

    model = cls(h=4, input_size=8, loss=MSE(), scaler_type="standard", **SMALL[cls],
                **(exog_options(cls, EXOG) if exog else {}))
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    if cls is xLSTM:  # its zero-initialized gate weights would hide their own gradients
        params += np.random.default_rng(1).normal(0, 0.1, params.size)
    assert_model_gradient(model, params)


def assert_model_gradient(model, params, checked: int = 25, training=None):
    """loss_and_grad against float64 central differences at `checked` random parameters;
    training (a TrainingNoise) given: the training forward (dropout, teacher forcing)."""
    batch = sample_batch(model)
    _, grads = loss_and_grad(model, params, batch, training)
    rng = np.random.default_rng(1)
    for i in rng.choice(params.size, checked, replace=False):
        up, down = params.copy(), params.copy()
        up[i] += FD_EPS
        down[i] -= FD_EPS
        numeric = (loss_and_grad(model, up, batch, training)[0]
                   - loss_and_grad(model, down, batch, training)[0]) / (2 * FD_EPS)
        assert grads[i] == pytest.approx(numeric, rel=FD_RTOL, abs=1e-7), f"parameter {i}"


@pytest.fixture(scope="module")
def air():
    df = air_passengers()
    return df.iloc[:-12], df.iloc[-12:]


@pytest.mark.parametrize("cls", list(SMALL), ids=lambda c: c.__name__)
def test_train_predict_save_load(cls, air, tmp_path):
    train, _ = air
    kwargs = dict(h=12, input_size=24, max_steps=30, windows_batch_size=32,
                  learning_rate=3e-3, scaler_type="robust", **SMALL[cls])  # 30 steps: learn fast
    if cls is NBEATSx:
        kwargs["stack_types"], kwargs["n_blocks"] = ["identity", "trend"], [1, 1]
    nf = NeuralForecast([cls(**kwargs)], freq="MS")
    nf.fit(train, verbose=False)
    losses = [loss for _, loss in nf.states[0].train_losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    fcst = nf.predict()
    assert list(fcst.columns) == ["unique_id", "ds", cls.__name__]
    assert len(fcst) == 12 and fcst[cls.__name__].notna().all()
    assert fcst.ds.iloc[0] == pd.Timestamp("1960-01-01") and fcst.ds.iloc[-1] == pd.Timestamp("1960-12-01")
    nf.save(tmp_path / "run")
    again = NeuralForecast.load(tmp_path / "run").predict()
    pd.testing.assert_frame_equal(fcst, again)
    same_seed = NeuralForecast([cls(**kwargs)], freq="MS").fit(train, verbose=False).predict()
    pd.testing.assert_frame_equal(fcst, same_seed)
    other_seed = NeuralForecast([cls(**kwargs, random_seed=7)], freq="MS").fit(
        train, verbose=False).predict()
    assert not np.allclose(fcst[cls.__name__], other_seed[cls.__name__])


def test_kernel_paths_agree_on_a_training_run(air):
    """The numba and numpy paths train the same model to the same forecasts."""
    import ndwork

    train, _ = air
    outs = []
    for kernels in ("numba", "numpy"):
        with ndwork.optimizations(kernels=kernels):
            nf = NeuralForecast([NHITS(h=12, input_size=24, max_steps=10, mlp_units=[[32, 32]],
                                       windows_batch_size=16, scaler_type="standard")], "MS")
            outs.append(nf.fit(train, verbose=False).predict().NHITS.to_numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4)


def test_initial_state_is_seeded():
    a, b = initial_state(MLP(h=2, input_size=4)), initial_state(MLP(h=2, input_size=4))
    np.testing.assert_array_equal(a.params, b.params)
