"""The recurrent and convolutional models: NeuralForecast's defaults and options, bad
input, and the rest of ndwork around them (intervals, cross-validation, warm start,
distributed fit, profiler)."""

import numpy as np
import pandas as pd
import pytest

import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers, synthetic_panel
from ndwork.losses import MQLoss
from ndwork.models import GRU, LSTM, RNN, TCN, BiTCN, DilatedRNN, xLSTM

SMALL = {RNN: dict(encoder_hidden_size=16, decoder_hidden_size=16),
         LSTM: dict(encoder_hidden_size=16, decoder_hidden_size=16),
         GRU: dict(encoder_hidden_size=16, decoder_hidden_size=16),
         TCN: dict(encoder_hidden_size=16, decoder_hidden_size=16, dilations=[1, 2, 4]),
         BiTCN: dict(hidden_size=8, dropout=0.1),
         DilatedRNN: dict(encoder_hidden_size=8, decoder_hidden_size=8, dilations=[[1, 2], [4]]),
         xLSTM: dict(encoder_hidden_size=8, decoder_hidden_size=8, backbone="sLSTM")}
MODELS = list(SMALL)


def ids(cls):
    return cls.__name__


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU, TCN, DilatedRNN, xLSTM], ids=ids)
def test_input_size_defaults_to_three_horizons(cls):
    with pytest.warns(UserWarning, match="using 3 \\* h = 36"):
        model = cls(h=12)
    assert model.input_size == 36
    assert model.windows_batch_size == 128 and model.scaler_type == "robust"


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=ids)
def test_a_horizon_longer_than_the_input_is_upsampled_over_time(cls):
    model = cls(h=12, input_size=6, **SMALL[cls], max_steps=20, windows_batch_size=16)
    assert model.num_parameters() == cls(h=12, input_size=12, **SMALL[cls]).num_parameters() \
        + 6 * 12 + 12  # NeuralForecast's upsample_sequence = Linear(input_size, h)
    fcst = NeuralForecast([model], "MS").fit(air_passengers(), verbose=False).predict()
    assert len(fcst) == 12 and np.isfinite(fcst[cls.__name__]).all()


@pytest.mark.parametrize("cls,kwargs,message", [
    (LSTM, dict(encoder_hidden_size=0), "encoder_hidden_size=0 must be a positive integer"),
    (GRU, dict(encoder_n_layers=-1), "encoder_n_layers=-1 must be a positive integer"),
    (RNN, dict(decoder_hidden_size=0), "decoder_hidden_size=0 must be a positive integer"),
    (RNN, dict(encoder_activation="gelu"), "encoder_activation='gelu': use 'tanh' or 'relu'"),
    (LSTM, dict(recurrent=True, h_train=0), "h_train=0 must be a positive integer"),
    (LSTM, dict(encoder_dropout=1.0), "encoder_dropout=1.0 must be in"),
    (TCN, dict(kernel_size=0), "kernel_size=0 must be a positive integer"),
    (TCN, dict(dilations=[1, 0]), "dilations=\\[1, 0\\] must be a non-empty list"),
    (TCN, dict(dilations=[1, 2, 32]), "reaches 32 steps back, beyond input_size=24"),
    (TCN, dict(encoder_hidden_size=-4), "encoder_hidden_size=-4 must be a positive integer"),
    (BiTCN, dict(hidden_size=0), "hidden_size=0 must be a positive integer"),
    (DilatedRNN, dict(cell_type="Foo"), "cell_type='Foo' is not known"),
    (DilatedRNN, dict(dilations=[[1, 2], []]), "must be non-empty lists"),
    (DilatedRNN, dict(dilations=[[1, 32]]), "dilation 32 leaves no recurrence"),
    (BiTCN, dict(dropout=1.5), "dropout=1.5 must be in"),
    (xLSTM, dict(backbone="gLSTM"), "backbone='gLSTM'; use one of \\['mLSTM', 'sLSTM'\\]"),
    (xLSTM, dict(backbone="sLSTM", encoder_hidden_size=30), "must be a multiple of its 4 heads"),
    (xLSTM, dict(encoder_n_blocks=0), "encoder_n_blocks=0 must be a positive integer"),
    (xLSTM, dict(decoder_dropout=-0.1), "decoder_dropout=-0.1 must be in"),
])
def test_bad_options_name_the_option_and_the_fix(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(h=12, input_size=24, **kwargs)


@pytest.mark.parametrize("cls", MODELS, ids=ids)
def test_intervals_cross_validation_and_warm_start(cls):
    df = synthetic_panel(3, 120, seed=4)
    model = cls(h=6, input_size=18, max_steps=8, loss=MQLoss(level=[80]), **SMALL[cls],
                windows_batch_size=16)
    nf = NeuralForecast([model], "D")
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    name = cls.__name__
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", f"{name}-median",
                                f"{name}-lo-80", f"{name}-hi-80", "y"]
    assert (cv[f"{name}-lo-80"] <= cv[f"{name}-hi-80"]).all() and len(cv) == 3 * 2 * 6
    nf.fit(df, use_init_models=True, verbose=False)
    before = nf.states[0].params.copy()
    nf.fit(df, warm_start=True, verbose=False)
    assert nf.states[0].optimizer.step == 16 and not np.array_equal(nf.states[0].params, before)


def test_exogenous_inputs_reach_the_recurrent_and_convolutional_models():
    df = synthetic_panel(3, 80, seed=2)
    df["promo"] = (np.arange(len(df)) % 7 == 0).astype(np.float32)
    static = pd.DataFrame({"unique_id": df.unique_id.unique(), "size": [1.0, 2.0, 3.0]})
    futr = NeuralForecast([LSTM(h=4, input_size=12, max_steps=1)], "D").fit(df, verbose=False)
    future = futr.predict()[["unique_id", "ds"]].assign(promo=1.0)
    for cls in MODELS:
        model = cls(h=4, input_size=12, max_steps=3, futr_exog_list=["promo"],
                    stat_exog_list=["size"], **SMALL[cls], windows_batch_size=8)
        nf = NeuralForecast([model], "D").fit(df, static_df=static, verbose=False)
        base = nf.predict(futr_df=future)[cls.__name__]
        shifted = nf.predict(futr_df=future.assign(promo=0.0))[cls.__name__]
        assert not np.allclose(base, shifted), cls.__name__  # the future values are used


def test_distributed_fit_with_dropout_equals_one_process(client):
    df = synthetic_panel(6, 150, seed=3)

    def model():
        return LSTM(h=6, input_size=24, max_steps=6, encoder_hidden_size=16,
                    decoder_hidden_size=16, encoder_dropout=0.3, windows_batch_size=32,
                    scaler_type="standard")

    alone = NeuralForecast([model()], "D").fit(df, verbose=False)
    spread = NeuralForecast([model()], "D").fit(df, distributed=client, verbose=False)
    np.testing.assert_allclose(spread.states[0].params, alone.states[0].params, atol=1e-5)


def test_the_profiler_sees_the_sequence_ops():
    nf = NeuralForecast([LSTM(h=12, input_size=24, max_steps=2, **SMALL[LSTM])], "MS")
    with ndwork.profile() as prof:
        nf.fit(air_passengers(), verbose=False)
    ops = set(prof.table().op)
    assert {"recurrent", "recurrent backward"} <= ops
    nf = NeuralForecast([TCN(h=12, input_size=24, max_steps=2, **SMALL[TCN])], "MS")
    with ndwork.profile() as prof:
        nf.fit(air_passengers(), verbose=False)
    assert {"causal_conv1d", "causal_conv1d backward"} <= set(prof.table().op)


def test_bitcn_looks_ahead_only_through_future_exogenous_values():
    """The forward-looking stack sees later steps; the backward one never does."""
    from ndwork.training.trainer import forward, initial_state

    model = BiTCN(h=3, input_size=8, hidden_size=4, dropout=0.0, futr_exog_list=["f"])
    rng = np.random.default_rng(0)
    batch = {"insample_y": rng.normal(size=(2, 8)).astype(np.float32),
             "futr_exog": rng.normal(size=(2, 11, 1)).astype(np.float32),
             "hist_exog": None, "stat_exog": None}
    params = initial_state(model).params
    base = forward(model, params, batch)[0].data
    later = {**batch, "futr_exog": batch["futr_exog"].copy()}
    later["futr_exog"][:, 10] += 1.0  # the last horizon step's future value
    assert not np.allclose(forward(model, params, later)[0].data, base)
    one_stack = BiTCN(h=3, input_size=8, hidden_size=4, dropout=0.0)
    params = initial_state(one_stack).params
    plain = {**batch, "futr_exog": None}
    y0 = forward(one_stack, params, plain)[0].data
    changed = {**plain, "insample_y": plain["insample_y"].copy()}
    changed["insample_y"][:, 0] += 1.0  # the first input step still reaches the forecast
    assert not np.allclose(forward(one_stack, params, changed)[0].data, y0)


def test_the_forward_looking_convolution_is_the_right_padded_one():
    """flip(causal(flip(x), flip_k(w))) == NeuralForecast's right-padded Conv1d:
    y[t] = sum_k x[t + k d] w[k] (zeros past the end)."""
    from ndwork.autodiff import Tensor, ops

    rng = np.random.default_rng(1)
    x, w, d = rng.normal(size=(1, 10, 2)), rng.normal(size=(2, 2, 3)), 4
    y = ops.flip(ops.causal_conv1d(ops.flip(Tensor(x), 1), ops.flip(Tensor(w), 0), None, d),
                 1).data
    for t in range(10):
        direct = sum(x[0, t + k * d] @ w[k] for k in range(2) if t + k * d < 10)
        np.testing.assert_allclose(y[0, t], direct, rtol=1e-12)


@pytest.mark.parametrize("cell_type", ["RNN", "LSTM", "GRU"])
def test_a_dilated_layer_is_its_cell_over_interleaved_subsequences(cell_type):
    """Rate r: the sub-sequences t = j, j + r, ... run independently; checked against
    running the plain layer on each sub-sequence."""
    from ndwork.autodiff import Tensor
    from ndwork.models.dilated_rnn import CELLS, dilated
    from ndwork.nn import ParameterSpec, RecurrentStack
    from ndwork.training.trainer import Parameters

    spec = ParameterSpec()
    layer = RecurrentStack(spec, "l", CELLS[cell_type], 2, 3, 1)
    rng = np.random.default_rng(0)
    p = Parameters(spec.shapes).tensors(spec.initialize(rng))
    x = rng.normal(size=(7, 2, 2)).astype(np.float32)  # T=7, not a multiple of the rate
    y = dilated(layer, p, Tensor(x), 3).data
    for j in range(3):
        alone = layer.run_time_major(p, Tensor(np.ascontiguousarray(x[j::3]))).data
        np.testing.assert_allclose(y[j::3], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell_type", ["ResLSTM", "AttentiveLSTM"])
def test_step_by_step_cells_gradients_and_training(cell_type):
    """NeuralForecast's ResLSTM and AttentiveLSTM cells, built from autodiff ops."""
    from test_models import assert_model_gradient

    from ndwork.losses import MSE

    model = DilatedRNN(h=4, input_size=8, cell_type=cell_type, encoder_hidden_size=3,
                       decoder_hidden_size=3, dilations=[[1, 2]], loss=MSE())
    # NeuralForecast draws these cells N(0, 1): scaled down, the check stays off saturation
    assert_model_gradient(model, model.spec.initialize(np.random.default_rng(0), np.float64)
                          * 0.3, checked=20)
    nf = NeuralForecast([DilatedRNN(h=12, input_size=24, cell_type=cell_type, max_steps=3,
                                    encoder_hidden_size=8, decoder_hidden_size=8,
                                    windows_batch_size=16)], "MS")
    assert np.isfinite(nf.fit(air_passengers(), verbose=False).predict()["DilatedRNN"]).all()


@pytest.mark.parametrize("cls", [LSTM, TCN, BiTCN], ids=ids)
def test_neuralforecast_weights_map_onto_ndwork_parameters(cls):
    """The fidelity suite's mapping (run against NeuralForecast in the peers environment),
    checked here on PyTorch-layout arrays built from ndwork's: every value lands back."""
    from ndwork.bench.fidelity import torch_to_ndwork
    from ndwork.training.trainer import initial_state, layout

    model = cls(h=4, input_size=8, **SMALL[cls])
    flat = initial_state(model).params.astype(np.float64)
    views = layout(model).views(flat)
    torch_layout, names = [], list(views)
    k = 0
    while k < len(names):
        name, value = names[k], views[names[k]]
        if name.endswith("conv2.state.weight"):  # BiTCN: one 1x1 conv to 2C, then its bias
            skip_w, skip_b = views[names[k + 2]], views[names[k + 3]]
            weight = np.concatenate([value.T, skip_w.T])[:, :, None]
            torch_layout += [(name.replace(".state", ""), weight),
                             (name.replace(".state.weight", ".bias"),
                              np.concatenate([views[names[k + 1]], skip_b]))]
            k += 4
            continue
        torch_layout.append((name, value.transpose(2, 1, 0) if value.ndim == 3 else value.T))
        k += 1
    np.testing.assert_array_equal(torch_to_ndwork(torch_layout, model.spec.shapes), flat)


def test_xlstm_backbones_counts_and_recurrent_option():
    """sLSTM's count is NeuralForecast's with the xlstm package's pure-PyTorch sLSTM cell
    (its default CUDA cell cannot be built on a CPU); mLSTM's is in test_models."""
    assert xLSTM(h=12, input_size=24, backbone="sLSTM").num_parameters() == 233_389
    assert xLSTM(h=12, input_size=24, encoder_n_blocks=3,
                 encoder_hidden_size=64).num_parameters() == 101_509
    with pytest.warns(UserWarning, match="does not support recurrent forecasts"):
        assert xLSTM(h=12, input_size=24, recurrent=True).recurrent is False


def test_xlstm_slstm_gradient_and_the_fidelity_mapping():
    from test_models import assert_model_gradient

    from ndwork.bench.fidelity import torch_to_ndwork
    from ndwork.losses import MSE

    model = xLSTM(h=4, input_size=8, backbone="sLSTM", encoder_hidden_size=8,
                  decoder_hidden_size=8, loss=MSE(), scaler_type="standard")
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    params += np.random.default_rng(1).normal(0, 0.1, params.size)  # recurrent weights start at 0
    assert_model_gradient(model, params)
    # PyTorch's layouts, as the fidelity suite reads them from NeuralForecast's xLSTM
    from ndwork.training.trainer import layout

    torch_layout = []
    for name, value in layout(model).views(params).items():
        if name.endswith("conv1d.conv.weight"):
            value = value.T[:, None, :]
        elif value.ndim == 3:
            value = value.transpose(0, 2, 1)
            name = name.replace("recurrent_kernel", "_recurrent_kernel_")
        else:
            value = value.T
        torch_layout.append((name, value))
    np.testing.assert_array_equal(torch_to_ndwork(torch_layout, model.spec.shapes), params)


# --- recurrent=True ----------------------------------------------------------------------

def test_recurrent_mode_counts_match_neuralforecast():
    """NeuralForecast 3.3 with recurrent=True: a linear head per step (LSTM: proj_size)."""
    counts = {RNN: 49_921, LSTM: 4_352, GRU: 363_201}
    for cls, count in counts.items():
        model = cls(h=12, input_size=24, recurrent=True)
        assert model.num_parameters() == count
        assert model.windows("train") == (25, 1) and model.windows("predict") == (25, 12)
    with pytest.warns(UserWarning, match="inference_input_size=-1 is too small"):
        assert LSTM(h=12, input_size=24, recurrent=True,
                    inference_input_size=-1).windows("predict") == (25, 12)
    assert GRU(h=6, input_size=12, recurrent=True, inference_input_size=40,
               h_train=3).windows("train") == (13, 3)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=ids)
def test_recursive_decoding_is_teacher_forcing_on_its_own_forecasts(cls):
    """Decoding carries each layer's state and feeds each forecast back with the next
    step's exogenous values; teacher forcing with those forecasts as the targets must
    give them back. Catches a state, shift or exogenous misalignment anywhere."""
    from test_models import EXOG, sample_batch

    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.training.trainer import forward

    with ndwork.optimizations(precision="fp64"):
        model = cls(h=5, input_size=6, recurrent=True, encoder_n_layers=2,
                    encoder_hidden_size=8, scaler_type="standard", **EXOG)
        params = model.spec.initialize(np.random.default_rng(0), np.float64)
        batch = sample_batch(model, stage="valid")
        decoded = forward(model, params, batch)[0].data  # (B, h, 1)
        assert decoded.shape == (batch["insample_y"].shape[0], 5, 1)
        forced = dict(batch, outsample_y=decoded[..., 0])
        again = forward(model, params, forced, TrainingNoise(0, 0, np.arange(len(decoded))))
    np.testing.assert_allclose(again[0].data, decoded, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=ids)
def test_recurrent_mode_gradient(cls):
    """The teacher-forced training forward (LSTM through its projection) against float64
    finite differences."""
    from test_models import EXOG, assert_model_gradient

    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.losses import MSE

    model = cls(h=4, input_size=6, recurrent=True, h_train=3, encoder_hidden_size=4,
                loss=MSE(), scaler_type="standard", **EXOG)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    assert_model_gradient(model, params, training=TrainingNoise(0, 0, np.arange(6)))


def test_recurrent_mode_fits_forecasts_intervals_cross_validates_and_reloads(tmp_path):
    df = synthetic_panel(3, 120, seed=4)
    models = [LSTM(h=6, input_size=12, recurrent=True, max_steps=10, windows_batch_size=16,
                   loss=MQLoss(level=[80]), **SMALL[LSTM], alias="lstm_rec"),
              GRU(h=6, input_size=12, recurrent=True, h_train=3, inference_input_size=30,
                  max_steps=10, windows_batch_size=16, **SMALL[GRU])]
    nf = NeuralForecast(models, "D")
    nf.fit(df, val_size=6, verbose=False)
    fcst = nf.predict()
    assert len(fcst) == 18 and np.isfinite(fcst.drop(columns=["unique_id", "ds"])).all().all()
    assert (fcst["lstm_rec-lo-80"] <= fcst["lstm_rec-median"]).all()
    nf.save(tmp_path / "run")
    pd.testing.assert_frame_equal(NeuralForecast.load(tmp_path / "run").predict(), fcst)
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    assert len(cv) == 36 and np.isfinite(cv["GRU"]).all()


def test_a_series_shorter_than_the_inference_window_is_named():
    df = synthetic_panel(2, 60, seed=1)
    model = GRU(h=6, input_size=12, recurrent=True, inference_input_size=40, max_steps=2,
                **SMALL[GRU])
    nf = NeuralForecast([model], "D").fit(df, verbose=False)
    short = df[(df.unique_id == df.unique_id.iloc[0]) | (df.groupby("unique_id").cumcount() < 30)]
    with pytest.raises(ValueError, match=r"fewer than the 41 points a forecast reads"):
        nf.predict(short)


def test_the_public_panel_is_shipped():
    from ndwork.datasets import us_employment

    df = us_employment()
    assert df.unique_id.nunique() == 22 and (df.groupby("unique_id").size() == 120).all()
    assert df.y.notna().all() and df.y.dtype == np.float32
    assert (df.groupby("unique_id").ds.diff().dropna().dt.days.between(28, 31)).all()
    assert NeuralForecast([TCN(h=12, input_size=24, max_steps=2, **SMALL[TCN])], "MS").fit(
        df, verbose=False).predict().shape == (22 * 12, 3)
