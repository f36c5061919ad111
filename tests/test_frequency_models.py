"""The frequency-domain and gated-attention models (Autoformer, FEDformer, TimesNet, TFT):
what the
shared model tests (test_models.py: counts, gradients, training, save/load) do not
cover: the training forward's gradient, the Fourier modes' seeding, the decomposition,
and bad options."""

import numpy as np
import pytest
from test_models import SMALL, assert_model_gradient

from ndwork import NeuralForecast
from ndwork.autodiff.noise import TrainingNoise
from ndwork.datasets import air_passengers
from ndwork.losses import MSE
from ndwork.models import TFT, Autoformer, FEDformer, TimesNet
from ndwork.models.fedformer import frequency_modes


@pytest.mark.parametrize("cls", [Autoformer, FEDformer, TimesNet], ids=lambda c: c.__name__)
def test_training_forward_gradient(cls):
    """In training Autoformer keeps the lags strongest over the whole batch (in
    inference each window's own): that path's gradient too."""
    model = cls(h=4, input_size=8, loss=MSE(), scaler_type="standard", dropout=0.0,
                **SMALL[cls])
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    assert_model_gradient(model, params, training=TrainingNoise(0, 0, np.arange(6)))


def test_autoformer_lags_batch_wide_in_training_and_per_window_in_inference(monkeypatch):
    from test_models import sample_batch

    from ndwork.autodiff import ops
    from ndwork.training.trainer import loss_and_grad

    model = Autoformer(h=4, input_size=16, encoder_layers=1, decoder_layers=0,
                       **SMALL[Autoformer])
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    batch = sample_batch(model)
    batch["insample_y"] = np.random.default_rng(1).normal(size=batch["insample_y"].shape)
    chosen, original = [], ops.delay_aggregate
    monkeypatch.setattr(ops, "delay_aggregate",
                        lambda v, w, delays: chosen.append(delays) or original(v, w, delays))
    loss_and_grad(model, params, batch, TrainingNoise(0, 0, np.arange(6)))
    loss_and_grad(model, params, batch)
    training, inference = chosen
    assert training.shape == inference.shape == (6, int(3 * np.log(16)))
    assert (training == training[0]).all()  # one set of lags for the batch
    assert len({tuple(sorted(row)) for row in inference}) > 1  # each window its own


def test_fedformer_modes_come_from_the_seed():
    a = FEDformer(h=12, input_size=96, modes=8).mode_index
    again = FEDformer(h=12, input_size=96, modes=8).mode_index
    other = FEDformer(h=12, input_size=96, modes=8, random_seed=3).mode_index
    for kind in a:
        np.testing.assert_array_equal(a[kind], again[kind])
        assert len(a[kind]) == 8 and (np.diff(a[kind]) > 0).all()
    assert any(not np.array_equal(a[k], other[k]) for k in a)
    low = FEDformer(h=12, input_size=96, modes=8, mode_select="low").mode_index
    np.testing.assert_array_equal(low["encoder"], np.arange(8))
    # NeuralForecast's draw: numpy's global state seeded, list shuffled, first modes sorted
    np.random.seed(5)
    index = list(range(48))
    np.random.shuffle(index)
    np.testing.assert_array_equal(frequency_modes(96, 8, "random", np.random.RandomState(5)),
                                  sorted(index[:8]))


def test_fedformer_mode_count_follows_the_input():
    """Fewer steps than 2 * modes: every frequency below half the length, as NF."""
    model = FEDformer(h=4, input_size=10, modes=64)
    assert [len(v) for v in model.mode_index.values()] == [5, 4, 4, 5]
    shape = model.spec.shapes["encoder.attn_layers.0.attention.inner_correlation.weights1"]
    assert shape == (8, 16, 16, 5, 2)
    assert "encoder.attn_layers.1.attention.inner_correlation.weights1" not in model.spec.shapes


def test_decomposition_models_forecast_a_trend_they_are_shown():
    """A linear trend plus a season, 300 steps: both models learn it to a few percent."""
    t = np.arange(240)
    df = air_passengers().iloc[:0]
    df = df.reindex(range(240)).assign(
        unique_id="s", ds=np.array(np.datetime64("2000-01-01") + t.astype("timedelta64[D]")),
        y=(100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12)).astype(np.float32))
    for cls in (Autoformer, FEDformer):
        nf = NeuralForecast([cls(h=12, input_size=36, max_steps=150, learning_rate=3e-3,
                                 windows_batch_size=32, scaler_type="standard",
                                 enable_progress_bar=False, **SMALL[cls])], "D")
        fc = nf.fit(df.iloc[:-12]).predict()[cls.__name__].to_numpy()
        truth = df.y.to_numpy()[-12:]
        assert np.abs(fc - truth).mean() / truth.mean() < 0.05, cls.__name__


@pytest.mark.parametrize("options,match", [
    (dict(n_head=4), "n_head=8"),
    (dict(hidden_size=36), "divisible by 8"),
    (dict(version="Wavelets"), "'Fourier' version only"),
    (dict(mode_select="lowest"), "mode_select"),
    (dict(modes=0), "modes=0"),
    (dict(decoder_input_size_multiplier=0.1, modes=64, h=2), "decoder_input_size_multiplier"),
    (dict(MovingAvg_window=4), "MovingAvg_window=4"),
])
def test_fedformer_bad_options(options, match):
    kwargs = dict(h=12, input_size=48) | options
    with pytest.raises(ValueError, match=match):
        FEDformer(**kwargs)


@pytest.mark.parametrize("options,match", [
    (dict(factor=0.1), "factor=0.1"),
    (dict(factor=50), "factor=50"),
    (dict(MovingAvg_window=0), "MovingAvg_window=0"),
    (dict(activation="tanh"), "activation"),
])
def test_autoformer_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        Autoformer(h=12, input_size=24, **options)


@pytest.mark.parametrize("rows,cols", [(1, 12), (3, 4), (12, 1), (6, 6)])
def test_inception_is_the_average_of_its_convolutions(rows, cols):
    """One merged, cropped convolution against NeuralForecast's definition: each kernel
    size convolved separately (zero padding) and the results averaged."""
    from ndwork.autodiff import ops
    from ndwork.kernels import reference
    from ndwork.models.timesnet import InceptionBlock
    from ndwork.nn import ParameterSpec

    spec = ParameterSpec()
    block = InceptionBlock(spec, "b", 3, 2, num_kernels=4)
    rng = np.random.default_rng(0)
    flat = spec.initialize(rng, np.float64) + rng.normal(0, 0.1, sum(
        int(np.prod(s)) for s in spec.shapes.values()))
    p, at = {}, 0
    for name, shape in spec.shapes.items():
        size = int(np.prod(shape))
        p[name] = ops.constant(flat[at:at + size].reshape(shape))
        at += size
    x = rng.normal(size=(2, rows, cols, 3))
    got = block(ops.constant(x), block.merged(p)).data
    separate = [reference("conv2d_forward")(x, p[w].data) + p[b].data
                for w, b, _ in block.kernels]
    np.testing.assert_allclose(got, np.mean(separate, axis=0), rtol=1e-12, atol=1e-12)


def test_weights_memo_keeps_a_value_per_version_of_the_weights_only():
    from ndwork.autodiff import memo

    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    weights, other = np.zeros(3), np.zeros(3)
    memo.register(weights)
    with memo.forecasting(weights):
        assert memo.derived(("a",), compute) == memo.derived(("a",), compute) == 1
        assert memo.derived(("b",), compute) == 2
    with memo.forecasting(other):  # not registered: the training's own weights, say
        assert memo.derived(("a",), compute) == 3
    assert memo.derived(("a",), compute) == 4  # outside a forecast
    key = id(weights)
    del weights
    assert key not in memo._MEMOS


def test_timesnet_forecasts_from_kept_kernels_equal_fresh_ones_and_follow_training():
    """TimesNet's merged inception kernels are kept between forecasts: the forecasts
    equal a forward over an unregistered copy of the weights (nothing kept), before and
    after more training."""
    from ndwork.training.trainer import inference_weights, model_outputs

    df = air_passengers()
    model = TimesNet(h=12, input_size=24, max_steps=2, **SMALL[TimesNet])
    nf = NeuralForecast([model], freq="MS")
    for _ in range(2):
        nf.fit(df, verbose=False)
        first, again = nf.predict(), nf.predict()
        np.testing.assert_array_equal(first["TimesNet"], again["TimesNet"])
        state = nf.states[0]
        panel = nf._stored_panel()
        batch, _, _ = nf._forecast_batch(model, panel, panel.indptr[1:] - 1, None)
        kept = model_outputs(model, inference_weights(state), batch, state.buffers)
        fresh = model_outputs(model, state.params.copy(), batch, state.buffers)
        np.testing.assert_array_equal(kept, fresh)


@pytest.mark.parametrize("options,match", [
    (dict(top_k=0), "top_k=0"),
    (dict(top_k=19), "between 1 and 18"),
    (dict(num_kernels=19), "num_kernels=19"),
    (dict(num_kernels=0), "num_kernels=0"),
])
def test_timesnet_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        TimesNet(h=12, input_size=24, **options)


TFT_EXOG = dict(futr_exog_list=["f"], hist_exog_list=["x"], stat_exog_list=["s"])


@pytest.mark.parametrize("options", [
    dict(),
    dict(rnn_type="gru", n_rnn_layers=2, one_rnn_initial_state=True, grn_activation="SELU"),
    dict(n_rnn_layers=2, grn_activation="LeakyReLU")], ids=["lstm", "gru", "lstm2"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_tft_gradient_with_static_contexts(options, training):
    """The statics give the contexts and the encoders' initial states, the history's
    final state starts the future's: their gradients, through every layer."""
    model = TFT(h=4, input_size=8, loss=MSE(), scaler_type="standard", dropout=0.0,
                hidden_size=8, n_head=2, **TFT_EXOG, **options)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    noise = TrainingNoise(0, 0, np.arange(6)) if training else None
    assert_model_gradient(model, params, training=noise)


def test_tft_interpretation_after_predict():
    from test_models import exog_frame

    df, static = exog_frame(n_series=2, length=80)
    train = df.groupby("unique_id").head(72)
    future = df.groupby("unique_id").tail(8)[["unique_id", "ds", "f"]]
    model = TFT(h=8, input_size=16, max_steps=5, hidden_size=8, n_head=2, **TFT_EXOG,
                enable_progress_bar=False)
    with pytest.raises(ValueError, match="Make a prediction"):
        model.feature_importances()
    NeuralForecast([model], "D").fit(train, static_df=static).predict(futr_df=future)
    importances = model.feature_importances()
    past = importances["Past variable importance over time"]
    assert past.columns.tolist() == ["x", "f", "observed_target"] and len(past) == 16
    np.testing.assert_allclose(past.sum(axis=1), 1, rtol=1e-5)
    assert importances["Future variable importance over time"].shape == (8, 1)
    assert importances["Static covariates"].index.tolist() == ["s"]
    attention = model.attention_weights()
    assert attention.shape == (24, 24)
    np.testing.assert_allclose(attention.sum(axis=1), 1, rtol=1e-5)
    assert not np.triu(attention, 1).any()  # causal
    correlations = model.feature_importance_correlations()
    assert "Correlation with Mean Attention" in correlations.columns


def test_tft_interpretation_names_the_repeated_target_without_future_variables():
    model = TFT(h=12, input_size=24, max_steps=2, hidden_size=8, n_head=2,
                enable_progress_bar=False)
    NeuralForecast([model], "MS").fit(air_passengers()).predict()
    past = model.feature_importances()["Past variable importance over time"]
    assert past.columns.tolist() == ["repeated_target", "observed_target"]


def test_tft_names_missing_statics():
    from test_models import exog_frame

    df, _ = exog_frame()
    with pytest.raises(ValueError, match="static"):
        NeuralForecast([TFT(h=4, input_size=8, max_steps=1, **TFT_EXOG)], "D").fit(df)


@pytest.mark.parametrize("options,match", [
    (dict(tgt_size=2), "tgt_size=2"),
    (dict(grn_activation="GLU"), "grn_activation='GLU'"),
    (dict(rnn_type="rnn"), "rnn_type='rnn'"),
    (dict(n_rnn_layers=0), "n_rnn_layers=0"),
    (dict(hidden_size=10, n_head=4), "divisible by n_head"),
])
def test_tft_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        TFT(h=12, input_size=24, **options)


def test_tft_says_attention_dropout_is_not_applied():
    with pytest.warns(UserWarning, match="attn_dropout=0.2 is not applied"):
        TFT(h=12, input_size=24, attn_dropout=0.2)
