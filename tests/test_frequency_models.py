"""The frequency-domain and gated-attention models (Autoformer, FEDformer, TimesNet): what the
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
from ndwork.models import Autoformer, FEDformer, TimesNet
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


@pytest.mark.parametrize("options,match", [
    (dict(top_k=0), "top_k=0"),
    (dict(top_k=19), "between 1 and 18"),
    (dict(num_kernels=19), "num_kernels=19"),
    (dict(num_kernels=0), "num_kernels=0"),
])
def test_timesnet_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        TimesNet(h=12, input_size=24, **options)
