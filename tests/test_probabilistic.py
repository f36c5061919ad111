"""Distribution losses, their kernels, sampling, predict(level/quantiles) and conformal
intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, softplus

from ndwork import NeuralForecast
from ndwork.datasets import air_passengers
from ndwork.kernels import compiled, reference
from ndwork.kernels.likelihoods import N_PARAMS
from ndwork.losses import GMM, MAE, NBMM, PMM, DistributionLoss, MQLoss
from ndwork.models import MLP, NHITS
from ndwork.utils import PredictionIntervals

PARAM = {"normal": 0.2, "studentt": 0.1, "poisson": 1e-10, "negbin": 0.0, "bernoulli": 0.0,
         "tweedie": 1.5, "negbin_mixture": 0.0}


def _targets(kind, rng, n):
    if kind == "bernoulli":
        return rng.integers(0, 2, n).astype(float)
    if kind in ("poisson", "negbin", "negbin_mixture", "tweedie"):
        return rng.poisson(4, n).astype(float)
    return rng.normal(0, 3, n)


@pytest.mark.parametrize("kind", list(N_PARAMS))
def test_likelihood_kernel_matches_reference_float32(kind):
    rng = np.random.default_rng(0)
    n, p = 400, N_PARAMS[kind]
    raw = (rng.normal(size=(n, p)) * 2).astype(np.float32)
    y, loc, scale = _targets(kind, rng, n), rng.uniform(0.2, 3, n), rng.uniform(0.2, 3, n)
    nll, grad = compiled("nll")(kind, raw, y, loc, scale, PARAM[kind])
    nll_ref, grad_ref = reference("nll")(kind, raw, y, loc, scale, PARAM[kind])
    assert nll.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(nll, nll_ref, rtol=0, atol=1e-5 * np.abs(nll_ref).max())
    np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-5 * np.abs(grad_ref).max())


@pytest.mark.parametrize("side", ["compiled", "reference"])
@pytest.mark.parametrize("kind", list(N_PARAMS))
def test_likelihood_gradient_matches_finite_differences(kind, side):
    rng = np.random.default_rng(1)
    n, p = 60, N_PARAMS[kind]
    raw = rng.normal(size=(n, p)) * 1.5
    y, loc, scale = _targets(kind, rng, n), rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n)
    fn = compiled("nll") if side == "compiled" else reference("nll")
    _, grad = fn(kind, raw, y, loc, scale, PARAM[kind])
    eps = 1e-6
    for k in range(p):
        step = np.zeros_like(raw)
        step[:, k] = eps
        up = fn(kind, raw + step, y, loc, scale, PARAM[kind])[0]
        down = fn(kind, raw - step, y, loc, scale, PARAM[kind])[0]
        np.testing.assert_allclose(grad[:, k], (up - down) / (2 * eps), rtol=1e-6, atol=1e-7)


def _scipy_logpdf(kind, raw, y, loc, scale):
    """scipy's log density of the distribution NeuralForecast's decoupling describes."""
    r = [raw[:, k] for k in range(raw.shape[1])]
    if kind == "normal":
        return stats.norm.logpdf(y, r[0] * scale + loc, (softplus(r[1]) + 0.2) * scale)
    if kind == "studentt":
        return stats.t.logpdf(y, 3 + softplus(r[0]), r[1] * scale + loc,
                              (softplus(r[2]) + 0.1) * scale)
    if kind == "poisson":
        return stats.poisson.logpmf(y, softplus(r[0] * scale + loc) + 1e-10)
    if kind == "negbin":
        m = (softplus(r[0]) + 1e-8) * scale + loc
        alpha = (softplus(r[1]) + 1e-8) / (scale + 1)
        probs = m * alpha / (1 + m * alpha) + 1e-8
        return stats.nbinom.logpmf(y, 1 / alpha, 1 - probs)  # scipy's p: torch's 1 - probs
    return stats.bernoulli.logpmf(y, expit(r[0]))


@pytest.mark.parametrize("kind", ["normal", "studentt", "poisson", "negbin", "bernoulli"])
def test_log_likelihood_equals_scipy_including_tails(kind):
    """A grid of outputs from -12 to 12 and targets far into the tails."""
    grid = np.linspace(-12, 12, 13)
    p = N_PARAMS[kind]
    raw = np.stack(np.meshgrid(*[grid] * p), -1).reshape(-1, p)
    if kind == "bernoulli":
        ys = [0.0, 1.0]
    elif kind in ("poisson", "negbin"):
        ys = [0.0, 1.0, 7.0, 60.0, 400.0]
    else:
        ys = [-300.0, -20.0, 0.0, 3.0, 40.0, 1000.0]
    for y_value in ys:
        y = np.full(len(raw), y_value)
        loc, scale = np.full(len(raw), 1.5), np.full(len(raw), 2.0)
        expected = -_scipy_logpdf(kind, raw, y, loc, scale)
        for fn in (compiled("nll"), reference("nll")):
            got = fn(kind, raw, y, loc, scale, PARAM[kind])[0]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


def _batch(raw, y, shift, scale, mask=None):
    return {"outsample_y_data": y, "outsample_mask": np.ones_like(y) if mask is None else mask,
            "y_shift": shift, "y_scale": scale}


@pytest.mark.parametrize("loss", [
    PMM(n_components=3), PMM(n_components=3, weighted=True, horizon_correlation=True),
    GMM(n_components=2, weighted=True), GMM(n_components=2, batch_correlation=True),
    NBMM(n_components=2, weighted=True)], ids=repr)
def test_mixture_gradient_matches_finite_differences(loss):
    from ndwork.autodiff.tensor import Tensor, backward

    rng = np.random.default_rng(2)
    w, h = 4, 5
    raw = rng.normal(size=(w, h, loss.outputsize_multiplier))
    y = rng.poisson(3, (w, h)).astype(float)
    shift, scale = rng.uniform(0.5, 2, w), rng.uniform(0.5, 2, w)
    mask = (rng.random((w, h)) > 0.2).astype(float)
    x = Tensor(raw, requires_grad=True)
    value = loss(x, _batch(raw, y, shift, scale, mask))
    backward(value)
    eps = 1e-6
    fd = np.zeros_like(raw)
    for i in np.ndindex(raw.shape):
        step = np.zeros_like(raw)
        step[i] = eps
        fd[i] = (loss.nll(raw + step, y, mask, shift, scale)[0]
                 - loss.nll(raw - step, y, mask, shift, scale)[0]) / (2 * eps)
    np.testing.assert_allclose(x.grad, fd, rtol=1e-5, atol=1e-8)


def test_one_component_mixture_is_the_distribution():
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(3, 4, 2))
    y, shift, scale = rng.normal(size=(3, 4)), rng.normal(size=3), rng.uniform(1, 2, 3)
    mask = np.ones_like(y)
    mixture = GMM(n_components=1).nll(raw, y, mask, shift, scale)[0]
    single = DistributionLoss("Normal").nll(raw, y, mask, shift, scale)[0]
    assert mixture == pytest.approx(single, rel=1e-12)


@pytest.mark.parametrize("name,dist", [("Normal", stats.norm(1.5, (softplus(0.3) + 0.2) * 2)),
                                       ("Poisson", stats.poisson(softplus(0.3 * 2 + 1.5)))])
def test_sampled_quantiles_follow_the_distribution_and_repeat_for_a_seed(name, dist):
    loss = DistributionLoss(name, quantiles=[0.1, 0.5, 0.9], num_samples=20000)
    raw = np.full((1, 3, loss.outputsize_multiplier), 0.3)
    if name == "Normal":
        raw[..., 0] = 0.0
    first = loss.forecast(raw, np.array([1.5]), np.array([2.0]), np.random.default_rng(7))
    again = loss.forecast(raw, np.array([1.5]), np.array([2.0]), np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    spread = dist.ppf(0.9) - dist.ppf(0.1)
    np.testing.assert_allclose(first[0, :, 1:], np.broadcast_to(dist.ppf([0.1, 0.5, 0.9]), (3, 3)),
                               atol=0.05 * spread + 1.0 * (name == "Poisson"))
    np.testing.assert_allclose(first[0, :, 0], dist.mean(), atol=0.03 * spread)


def _noisy_panel(n_series=12, length=160, seed=0):
    """Seasonal series plus N(0, 1) noise: the 80% interval is the mean +- 1.28."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        level = 10 + 2 * i
        y = level + 3 * np.sin(2 * np.pi * (t + i) / 12) + rng.normal(size=length)
        frames.append(pd.DataFrame({"unique_id": f"s{i:02d}", "ds": t, "y": y}))
    return pd.concat(frames, ignore_index=True)


def _coverage(frame, model, level):
    inside = (frame["y"] >= frame[f"{model}-lo-{level}"]) & (frame["y"] <= frame[f"{model}-hi-{level}"])
    return 100 * inside.mean()


def test_calibrated_intervals_on_gaussian_noise():
    """DistributionLoss('Normal') and conformal intervals cover about their level (within
    5 points) on windows after the training data. Conformal quantiles follow
    NeuralForecast's formula, without a finite-sample correction: with n calibration
    windows per series they cover about (0.8 (n - 1) + 1) / (n + 1) of the 80% level."""
    df = _noisy_panel(16, 400)
    common = dict(h=12, input_size=24, max_steps=300, scaler_type="standard",
                  windows_batch_size=256, enable_progress_bar=False)
    models = [NHITS(mlp_units=[[64, 64]] * 3, loss=DistributionLoss("Normal", level=[80, 90]),
                    alias="nhits", **common),
              MLP(hidden_size=64, alias="mlp", **common)]
    nf = NeuralForecast(models, freq=1)
    cv = nf.cross_validation(df, n_windows=4, step_size=12, level=[80, 90], verbose=False,
                             prediction_intervals=PredictionIntervals(n_windows=50, step_size=2))
    for model in ("nhits", "mlp"):
        for level in (80, 90):
            assert abs(_coverage(cv, model, level) - level) <= 5, (model, level)


def test_predict_columns_as_neuralforecast_names_them():
    df = air_passengers()
    models = [MLP(h=6, input_size=12, max_steps=5, loss=DistributionLoss("StudentT", level=[80]),
                  alias="dist"),
              MLP(h=6, input_size=12, max_steps=5, loss=MQLoss(level=[80]), alias="mq"),
              MLP(h=6, input_size=12, max_steps=5, alias="point")]
    nf = NeuralForecast(models, freq="MS").fit(df, verbose=False,
                                                prediction_intervals=PredictionIntervals(3))
    assert nf.predict().columns.tolist() == [
        "unique_id", "ds", "dist", "dist-median", "dist-lo-80", "dist-hi-80", "mq-median",
        "mq-lo-80", "mq-hi-80", "point"]
    assert nf.predict(level=[80]).columns.tolist() == [
        "unique_id", "ds", "dist", "dist-lo-80", "dist-hi-80", "mq-median", "mq-lo-80",
        "mq-hi-80", "point", "point-lo-80", "point-hi-80"]
    fc = nf.predict(quantiles=[0.1, 0.9])
    assert [c for c in fc.columns if c.startswith(("dist", "point"))] == [
        "dist", "dist_ql0.1", "dist_ql0.9", "point", "point-ql0.1", "point-ql0.9"]
    assert (fc["dist_ql0.1"] <= fc["dist_ql0.9"]).all()
    assert (fc["point-ql0.1"] <= fc["point"]).all() and (fc["point"] <= fc["point-ql0.9"]).all()
    np.testing.assert_array_equal(nf.predict()["dist-lo-80"], nf.predict()["dist-lo-80"])


def test_return_params_and_parameter_counts():
    loss = DistributionLoss("Normal", level=[80, 90], return_params=True)
    assert loss.output_names == ["", "-median", "-lo-90", "-lo-80", "-hi-80", "-hi-90",
                                 "-loc", "-scale"]
    model = MLP(h=4, input_size=8, max_steps=3, loss=loss)
    base = MLP(h=4, input_size=8, max_steps=3, loss=MAE())
    # two outputs per step instead of one, plus the loss's 5 quantiles NF counts
    assert model.num_parameters() == base.num_parameters() + (1024 + 1) * 4 + 5
    nf = NeuralForecast([model], freq="MS").fit(air_passengers(), verbose=False)
    fc = nf.predict()
    assert (fc["MLP-scale"] > 0).all()


def test_conformal_calibration_survives_save_and_load(tmp_path):
    df = air_passengers()
    nf = NeuralForecast([MLP(h=6, input_size=12, max_steps=5)], freq="MS")
    nf.fit(df, verbose=False, prediction_intervals=PredictionIntervals(3, method="conformal_error"))
    nf.save(tmp_path / "ck")
    loaded = NeuralForecast.load(tmp_path / "ck")
    pd.testing.assert_frame_equal(nf.predict(level=[90]), loaded.predict(level=[90]))
    fc = loaded.predict(level=[90])
    # conformal_error intervals are symmetric around the point forecast
    np.testing.assert_allclose(fc["MLP"] - fc["MLP-lo-90"], fc["MLP-hi-90"] - fc["MLP"], rtol=1e-5)


def test_horizon_weight_drops_steps_from_the_loss():
    from ndwork.autodiff.tensor import Tensor, backward

    rng = np.random.default_rng(4)
    raw = rng.normal(size=(2, 4, 2))
    y = rng.normal(size=(2, 4))
    loss = DistributionLoss("Normal", horizon_weight=[1, 1, 0, 0])
    x = Tensor(raw, requires_grad=True)
    backward(loss(x, _batch(raw, y, np.zeros(2), np.ones(2))))
    assert (x.grad[:, 2:] == 0).all() and (x.grad[:, :2] != 0).all()
    with pytest.raises(ValueError, match="horizon_weight has 4 entries for a horizon of 3"):
        loss(Tensor(raw[:, :3]), _batch(raw[:, :3], y[:, :3], np.zeros(2), np.ones(2)))


def test_bad_probabilistic_input_names_the_problem():
    df = air_passengers()
    with pytest.raises(ValueError, match="level .* between 0 and 100"):
        DistributionLoss("Normal", level=[120])
    with pytest.raises(ValueError, match="quantiles .* between 0 and 1"):
        DistributionLoss("Normal", quantiles=[0.5, 1.2])
    with pytest.raises(ValueError, match="distribution 'Gamma' is not known"):
        DistributionLoss("Gamma")
    with pytest.raises(ValueError, match="rho in"):
        DistributionLoss("Tweedie")
    negative = df.assign(y=df["y"] - 300)
    with pytest.raises(ValueError, match="non-negative integer counts"):
        NeuralForecast([MLP(h=6, input_size=12, max_steps=2, loss=DistributionLoss("Poisson"))],
                       freq="MS").fit(negative, verbose=False)
    with pytest.raises(ValueError, match="non-negative integer counts"):
        NeuralForecast([MLP(h=6, input_size=12, max_steps=2, loss=PMM())],
                       freq="MS").fit(df.assign(y=df["y"] + 0.5), verbose=False)
    with pytest.raises(ValueError, match="0/1 targets"):
        NeuralForecast([MLP(h=6, input_size=12, max_steps=2, loss=DistributionLoss("Bernoulli"))],
                       freq="MS").fit(df, verbose=False)
    nf = NeuralForecast([MLP(h=6, input_size=12, max_steps=2),
                         MLP(h=6, input_size=12, max_steps=2, loss=MQLoss(level=[80]), alias="mq")],
                        freq="MS").fit(df, verbose=False)
    with pytest.raises(ValueError, match="prediction_intervals=PredictionIntervals"):
        nf.predict(level=[80])
    with pytest.raises(ValueError, match="level or quantiles, not both"):
        nf.predict(level=[80], quantiles=[0.1])
    with pytest.raises(ValueError, match="n_windows >= 2"):
        PredictionIntervals(n_windows=1)
    with pytest.raises(ValueError, match="needs at least"):
        nf.fit(df.groupby("unique_id").tail(20), verbose=False,
               prediction_intervals=PredictionIntervals(n_windows=5))
    with pytest.warns(UserWarning, match=r"trained for the quantiles \[0.1, 0.5, 0.9\].*"
                                         r"cannot forecast \[0.05, 0.95\]"):  # as NF: its own
        other = NeuralForecast([nf.models[1]], freq="MS").fit(df, verbose=False).predict(level=[90])
    assert other.columns.tolist() == ["unique_id", "ds", "mq-median", "mq-lo-80", "mq-hi-80"]
    with pytest.raises(ValueError, match="valid_loss"):
        MLP(h=6, input_size=12, valid_loss=DistributionLoss("Normal"))


# --- DeepAR ------------------------------------------------------------------------

def test_deepar_parameter_count_matches_neuralforecast():
    """199,555 weights plus the 5 quantiles NeuralForecast's loss holds as a parameter."""
    from ndwork.models import DeepAR

    assert DeepAR(h=12, input_size=24).num_parameters() == 199_560


@pytest.mark.parametrize("loss", [DistributionLoss("Normal"), DistributionLoss("StudentT"),
                                  GMM(n_components=2, weighted=True)], ids=repr)
def test_deepar_gradient_matches_finite_differences(loss):
    from test_models import EXOG, assert_model_gradient

    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.models import DeepAR

    model = DeepAR(h=4, input_size=8, h_train=2, lstm_hidden_size=6, lstm_dropout=0.0,
                   decoder_hidden_layers=1, decoder_hidden_size=5, loss=loss,
                   scaler_type="standard", **EXOG)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    assert_model_gradient(model, params, training=TrainingNoise(0, 0, np.arange(6)))


def test_deepar_paths_feed_back_their_own_draws():
    """Paths repeat for a seed; their first step is the one-step distribution's, and the
    spread grows over the horizon on a random walk (draws compound)."""
    from ndwork.models import DeepAR

    rng = np.random.default_rng(0)
    walk = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 300), "ds": np.tile(np.arange(300), 2),
                         "y": np.cumsum(rng.normal(size=600)).astype(np.float32)})
    model = DeepAR(h=10, input_size=20, max_steps=150, lstm_hidden_size=32, windows_batch_size=128,
                   loss=DistributionLoss("Normal", level=[80]), trajectory_samples=400,
                   scaler_type="standard", learning_rate=5e-3, enable_progress_bar=False)
    nf = NeuralForecast([model], freq=1).fit(walk, verbose=False)
    fc = nf.predict()
    pd.testing.assert_frame_equal(fc, nf.predict())
    width = (fc["DeepAR-hi-80"] - fc["DeepAR-lo-80"]).to_numpy().reshape(2, 10)
    assert (width[:, -1] > 1.5 * width[:, 0]).all()


def test_deepar_fits_cross_validates_saves_and_loads(tmp_path):
    from ndwork.models import DeepAR

    df = air_passengers()
    model = DeepAR(h=6, input_size=12, max_steps=10, lstm_hidden_size=16, windows_batch_size=64,
                   loss=DistributionLoss("StudentT", level=[90], return_params=True),
                   scaler_type="robust", val_check_steps=5)
    nf = NeuralForecast([model], freq="MS").fit(df, val_size=6, verbose=False)
    fc = nf.predict()
    assert fc.columns.tolist() == ["unique_id", "ds", "DeepAR", "DeepAR-median", "DeepAR-lo-90",
                                   "DeepAR-hi-90", "DeepAR-df", "DeepAR-loc", "DeepAR-scale"]
    assert (fc["DeepAR-df"] > 3).all() and (fc["DeepAR-scale"] > 0).all()
    assert len(nf.states[0].valid_losses) == 2  # MAE on the mean, NF's default valid_loss
    nf.save(tmp_path / "deepar")
    pd.testing.assert_frame_equal(fc, NeuralForecast.load(tmp_path / "deepar").predict())
    cv = nf.cross_validation(df, n_windows=2, step_size=6, level=[80], verbose=False)
    assert cv[["DeepAR-lo-80", "DeepAR-hi-80"]].notna().all().all()
    with pytest.raises(ValueError, match="exclude_insample_y"):
        DeepAR(h=6, input_size=12, exclude_insample_y=True)


def test_deepar_normal_intervals_are_calibrated_on_gaussian_noise():
    from ndwork.models import DeepAR

    df = _noisy_panel(16, 400)
    model = DeepAR(h=12, input_size=24, max_steps=150, lstm_hidden_size=32,
                   windows_batch_size=256, learning_rate=5e-3, scaler_type="standard",
                   loss=DistributionLoss("Normal", level=[80, 90]), trajectory_samples=200,
                   enable_progress_bar=False)
    cv = NeuralForecast([model], freq=1).cross_validation(df, n_windows=4, step_size=12,
                                                          verbose=False)
    for level in (80, 90):
        assert abs(_coverage(cv, "DeepAR", level) - level) <= 5, level


# --- the other losses NeuralForecast ships ----------------------------------------------

@pytest.mark.parametrize("loss", [
    "RMSE()", "MASE(seasonality=2)", "TukeyLoss(c=2.0)", "TukeyLoss(normalize=False)",
    "HuberQLoss(q=0.3, delta=0.5)", "HuberMQLoss(level=[80], delta=0.7)", "sCRPS(level=[80])",
    "FreDF(alpha=0.4)", "RMSE(horizon_weight=[1, 2, 0, 1, 1])"])
def test_array_loss_gradient_matches_finite_differences(loss):
    from ndwork import losses
    from ndwork.autodiff.tensor import Tensor, backward

    loss = eval(loss, vars(losses))
    rng = np.random.default_rng(5)
    k = loss.outputsize_multiplier
    y_hat = rng.normal(size=(3, 5, k))
    batch = {"outsample_y": rng.normal(size=(3, 5)), "insample_y": rng.normal(size=(3, 8)),
             "outsample_mask": (rng.random((3, 5)) > 0.2).astype(float)}
    x = Tensor(y_hat, requires_grad=True)
    backward(loss(x, batch))
    fd = np.zeros_like(y_hat)
    for i in np.ndindex(y_hat.shape):
        step = np.zeros_like(y_hat)
        step[i] = 1e-6
        fd[i] = (loss(Tensor(y_hat + step), batch).data - loss(Tensor(y_hat - step), batch).data) / 2e-6
    np.testing.assert_allclose(x.grad, fd, rtol=1e-5, atol=1e-8)


def test_array_losses_match_their_formulas():
    from ndwork.losses import MASE, RMSE, Accuracy, FreDF, TukeyLoss, relMSE

    rng = np.random.default_rng(6)
    y, y_hat = rng.normal(size=(2, 6)), rng.normal(size=(2, 6, 1))
    ones, insample = np.ones_like(y), rng.normal(size=(2, 10))
    e = y_hat[..., 0] - y
    assert RMSE().value(y_hat, y, ones) == pytest.approx(np.sqrt((e ** 2).mean()))
    naive = np.abs(insample[:, 3:] - insample[:, :-3]).mean(axis=1, keepdims=True)
    assert MASE(3).value(y_hat, y, ones, insample) == pytest.approx((np.abs(e) / naive).mean())
    spectrum = np.abs(np.fft.rfft(y_hat[..., 0], axis=1) - np.fft.rfft(y, axis=1)).mean()
    assert FreDF(0.25).value(y_hat, y, ones) == pytest.approx(0.75 * (e ** 2).mean() + 0.25 * spectrum)
    assert TukeyLoss(normalize=False).value(y_hat, y, ones) == pytest.approx(
        (4.685 ** 2 / 6 * (1 - (1 - (e / 4.685) ** 2) ** 3)).mean())
    far = y_hat + 100
    assert TukeyLoss(normalize=False).value(far, y, ones) == pytest.approx(4.685 ** 2 / 6)
    assert Accuracy().value(np.round(y)[..., None], np.round(y), ones) == 1.0
    assert relMSE().metric(y, y_hat[..., 0], y) == pytest.approx((e ** 2).mean() / 1e-5)
    with pytest.raises(ValueError, match="benchmark forecast"):
        MLP(h=6, input_size=12, loss=relMSE())


@pytest.mark.parametrize("loss", ["RMSE()", "MASE(seasonality=12)", "TukeyLoss()",
                                  "HuberQLoss(q=0.5)", "HuberMQLoss(level=[80])", "sCRPS()",
                                  "FreDF()", "IQLoss()", "HuberIQLoss()"])
def test_models_train_with_every_loss(loss):
    from ndwork import losses

    loss = eval(loss, vars(losses))
    model = MLP(h=6, input_size=24, max_steps=20, loss=loss, valid_loss=loss, val_check_steps=10,
                scaler_type="standard", hidden_size=32, enable_progress_bar=False)
    nf = NeuralForecast([model], freq="MS").fit(air_passengers(), val_size=6, verbose=False)
    fc = nf.predict()
    assert fc.drop(columns=["unique_id", "ds"]).notna().all().all()
    assert len(nf.states[0].valid_losses) == 2
    assert NeuralForecast.load  # round trip of the loss's configuration:
    assert type(model.loss).__name__ == losses.loss_from_config(model.loss.config()).__class__.__name__


# --- DeepNPTS ----------------------------------------------------------------------

def test_deepnpts_training_gradient_and_forecasts_inside_the_inputs_range():
    from test_models import EXOG, assert_model_gradient, sample_batch

    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.models import DeepNPTS
    from ndwork.training.trainer import forward

    model = DeepNPTS(h=4, input_size=8, hidden_size=6, dropout=0.0, scaler_type="standard", **EXOG)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    assert_model_gradient(model, params, training=TrainingNoise(0, 0, np.arange(6)))
    batch = sample_batch(model)
    out = forward(model, params, batch)[0].data[..., 0]
    inputs = batch["insample_y"]
    assert (out >= inputs.min(axis=1, keepdims=True) - 1e-9).all()
    assert (out <= inputs.max(axis=1, keepdims=True) + 1e-9).all()
    with pytest.raises(ValueError, match="DeepNPTS takes a point loss"):
        DeepNPTS(h=4, input_size=8, loss=DistributionLoss("Normal"))


# --- IQLoss ------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["IQLoss(cos_embedding_dim=4)",
                                  "HuberIQLoss(cos_embedding_dim=4, delta=0.3)"])
def test_implicit_quantile_loss_gradient_through_its_own_layers(loss):
    """The quantiles drawn for a step repeat for the same (seed, step, windows), so the
    loss is a function of the parameters alone and its gradient checks."""
    from test_models import sample_batch

    from ndwork import losses
    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.training.trainer import loss_and_grad

    model = MLP(h=4, input_size=8, hidden_size=6, loss=eval(loss, vars(losses)))
    assert any(name.startswith("loss.") for name in model.spec.shapes)
    params = model.spec.initialize(np.random.default_rng(0), np.float64)
    batch = sample_batch(model)

    def loss_at(x):
        return loss_and_grad(model, x, dict(batch), TrainingNoise(0, 3, np.arange(6)))

    _, grads = loss_at(params)
    for i in np.random.default_rng(1).choice(params.size, 30, replace=False):
        step = np.zeros_like(params)
        step[i] = 1e-6
        numeric = (loss_at(params + step)[0] - loss_at(params - step)[0]) / 2e-6
        assert grads[i] == pytest.approx(numeric, rel=1e-4, abs=1e-7), i


def test_implicit_quantile_forecasts_any_quantile():
    from ndwork.losses import IQLoss

    df = _noisy_panel(6, 300)
    model = MLP(h=12, input_size=24, hidden_size=64, max_steps=1000, loss=IQLoss(),
                learning_rate=3e-3, scaler_type="standard", windows_batch_size=256,
                enable_progress_bar=False)
    nf = NeuralForecast([model], freq=1)
    cv = nf.cross_validation(df, n_windows=3, step_size=12, level=[80], verbose=False)
    assert cv.columns.tolist()[-3:] == ["MLP-lo-80", "MLP-hi-80", "y"]
    assert abs(_coverage(cv, "MLP", 80) - 80) <= 5
    assert nf.predict().columns.tolist() == ["unique_id", "ds", "MLP_ql0.5"]
    fc = nf.predict(quantiles=[0.1, 0.5, 0.9])
    assert (fc["MLP_ql0.1"] < fc["MLP_ql0.5"]).all() and (fc["MLP_ql0.5"] < fc["MLP_ql0.9"]).all()


# --- simulate ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_for_paths():
    from ndwork.losses import IQLoss
    from ndwork.models import DeepAR

    kw = dict(h=6, input_size=12, max_steps=20, scaler_type="standard", enable_progress_bar=False)
    models = [DeepAR(**kw, lstm_hidden_size=8, trajectory_samples=50),
              MLP(**kw, hidden_size=16, alias="point"),
              MLP(**kw, hidden_size=16, loss=MQLoss(level=[50, 80, 98]), alias="mq"),
              NHITS(**kw, mlp_units=[[16, 16]], loss=DistributionLoss("Normal"), alias="normal"),
              MLP(**kw, hidden_size=16, loss=IQLoss(cos_embedding_dim=8), alias="iq")]
    nf = NeuralForecast(models, freq="MS")
    return nf.fit(air_passengers(), verbose=False, prediction_intervals=PredictionIntervals(3))


@pytest.mark.parametrize("method", ["gaussian_copula", "schaake_shuffle"])
def test_simulate_paths_follow_each_models_marginals(fitted_for_paths, method):
    nf = fitted_for_paths
    n = 2000
    sim = nf.simulate(n_paths=n, method=method)
    assert sim.columns.tolist() == ["unique_id", "ds", "sample_id", "DeepAR", "point", "mq",
                                    "normal", "iq"]
    assert len(sim) == n * 6 and (sim.sample_id.to_numpy()[:6] == 0).all()
    pd.testing.assert_frame_equal(sim, nf.simulate(n_paths=n, method=method))
    assert not np.allclose(sim["normal"], nf.simulate(n_paths=n, method=method, seed=9)["normal"])
    fc = nf.predict(level=[80])
    assert sim["iq"].notna().all()  # (its 20-step quantiles still cross: not compared)
    for model in ("point", "normal"):
        paths = sim[model].to_numpy().reshape(n, 6)
        lo, hi = np.quantile(paths, [0.1, 0.9], axis=0)
        width = (fc[f"{model}-hi-80"] - fc[f"{model}-lo-80"]).to_numpy()
        np.testing.assert_allclose(lo, fc[f"{model}-lo-80"], atol=0.1 * width.max(), err_msg=model)
        np.testing.assert_allclose(hi, fc[f"{model}-hi-80"], atol=0.1 * width.max(), err_msg=model)
    mq = sim["mq"].to_numpy().reshape(n, 6)
    np.testing.assert_allclose(np.median(mq, axis=0), nf.predict()["mq-median"],
                               atol=0.1 * np.ptp(mq))


def test_simulate_copula_correlates_the_steps_as_the_series_history():
    from ndwork.simulation import gaussian_copula, lag_one_rho

    rng = np.random.default_rng(0)
    shocks = np.zeros(3000)
    for t in range(1, 3000):  # differences with lag-1 autocorrelation 0.8
        shocks[t] = 0.8 * shocks[t - 1] + rng.normal()
    history = np.cumsum(shocks)
    assert lag_one_rho(history) == pytest.approx(0.8, abs=0.05)
    positions = np.linspace(0.01, 0.99, 99)
    values = np.broadcast_to(stats.norm.ppf(positions), (1, 4, 99))
    paths = gaussian_copula(positions, values, [history], 5000, np.random.default_rng(1))[0]
    correlation = np.corrcoef(paths.T)
    assert correlation[0, 1] == pytest.approx(0.8, abs=0.05)
    assert correlation[0, 3] == pytest.approx(0.8 ** 3, abs=0.06)


def test_deepar_simulates_its_own_trajectories(fitted_for_paths):
    nf = fitted_for_paths
    sim = nf.simulate(n_paths=50)
    paths = sim["DeepAR"].to_numpy().reshape(50, 6)
    fc = nf.predict()
    np.testing.assert_allclose(paths.mean(axis=0), fc["DeepAR"], rtol=1e-5)


def test_simulate_bad_input():
    nf = NeuralForecast([MLP(h=6, input_size=12, max_steps=2)], freq="MS")
    nf.fit(air_passengers(), verbose=False)
    with pytest.raises(ValueError, match="prediction_intervals=PredictionIntervals"):
        nf.simulate()
    with pytest.raises(ValueError, match="n_paths must be a positive integer"):
        nf.simulate(n_paths=0)
    with pytest.raises(ValueError, match=r"method='vine'\) is not known"):
        nf.simulate(method="vine")


def test_multi_quantile_losses_sum_over_quantiles_as_neuralforecast():
    """NeuralForecast 3.3's MQLoss divides by len() of a (1, 1, 1, Q) tensor, i.e. by 1:
    the pinball losses are summed over the quantiles (checked against NF by the
    fidelity suite)."""
    from ndwork.losses import HuberMQLoss

    rng = np.random.default_rng(8)
    y, y_hat, ones = rng.normal(size=(3, 4)), rng.normal(size=(3, 4, 3)), np.ones((3, 4))
    q = np.array([0.1, 0.5, 0.9])
    e = y[..., None] - y_hat
    pinball = np.maximum(q * e, (q - 1) * e).sum(axis=-1).mean()
    assert MQLoss(level=[80]).value(y_hat, y, ones) == pytest.approx(pinball)
    assert HuberMQLoss(level=[80], delta=1e9).value(y_hat, y, ones) == pytest.approx(
        (0.5 * (np.maximum(q * e, 0) ** 2 + np.maximum((q - 1) * e, 0) ** 2)).sum(-1).mean())


def test_every_model_takes_a_distribution_loss():
    """Every model fits with DistributionLoss and forecasts its intervals (DeepNPTS takes
    point losses only, as in NeuralForecast)."""
    from test_models import SMALL

    from ndwork.models import MODELS

    df = air_passengers()
    for name, cls in MODELS.items():
        if name == "DeepNPTS":
            continue
        options = dict(SMALL.get(cls, {}))
        if name == "NBEATSx":
            options.update(stack_types=["identity", "trend"], n_blocks=[1, 1])
        if name == "DeepAR":
            options = dict(lstm_hidden_size=8)
        if cls.MULTIVARIATE:
            options["n_series"] = 1
        if name == "TimeXer":  # its default patch (16) is longer than this window
            options["patch_len"] = 4
        model = cls(h=6, input_size=12, max_steps=3, windows_batch_size=16, scaler_type="robust",
                    loss=DistributionLoss("StudentT", level=[80]), enable_progress_bar=False,
                    **options)
        fc = NeuralForecast([model], freq="MS").fit(df, verbose=False).predict()
        assert fc.columns.tolist()[2:] == [name, f"{name}-median", f"{name}-lo-80",
                                           f"{name}-hi-80"], name
        assert (fc[f"{name}-lo-80"] <= fc[f"{name}-hi-80"]).all(), name


# --- ISQF --------------------------------------------------------------------------

@pytest.mark.parametrize("pieces", [1, 3])
def test_isqf_gradient_matches_finite_differences(pieces):
    loss = DistributionLoss("ISQF", level=[80, 90], num_pieces=pieces)
    assert loss.outputsize_multiplier == 2 * 4 * pieces + 2 + 5
    rng = np.random.default_rng(9)
    raw = rng.normal(size=(3, 4, loss.outputsize_multiplier)) * 2
    y = rng.normal(0, 6, (3, 4))
    shift, scale, mask = rng.normal(size=3), rng.uniform(0.5, 2, 3), np.ones((3, 4))
    mask[0, 0] = 0
    _, grad = loss.nll(raw, y, mask, shift, scale)
    fd = np.zeros_like(raw)
    for i in np.ndindex(raw.shape):
        step = np.zeros_like(raw)
        step[i] = 1e-5  # the loss sums many terms: smaller steps lose digits to round-off
        fd[i] = (loss.nll(raw + step, y, mask, shift, scale)[0]
                 - loss.nll(raw - step, y, mask, shift, scale)[0]) / 2e-5
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
    assert (grad[0, 0] == 0).all()


def test_isqf_quantile_function_is_monotone_and_inverts_its_knots():
    from ndwork.autodiff.tensor import Tensor
    from ndwork.losses import isqf

    loss = DistributionLoss("ISQF", quantiles=[0.1, 0.5, 0.9], num_pieces=3)
    raw = np.random.default_rng(10).normal(size=(5, loss.outputsize_multiplier))
    spline = isqf.Spline(Tensor(raw), loss.knots, 3)
    alpha = np.broadcast_to(np.linspace(0.001, 0.999, 400), (5, 400))
    q = spline.quantile(alpha)
    assert (np.diff(q, axis=1) >= -1e-9).all()
    at_knots = spline.quantile(np.broadcast_to(loss.knots, (5, 3)))
    np.testing.assert_allclose(at_knots, spline.qk_y.data, atol=1e-9)  # q(qk_x) = qk_y


def test_isqf_trains_and_forecasts_calibrated_quantiles():
    df = _noisy_panel(16, 400)
    model = MLP(h=12, input_size=24, hidden_size=64, max_steps=300, windows_batch_size=256,
                scaler_type="standard", loss=DistributionLoss("ISQF", level=[80, 90]),
                enable_progress_bar=False)
    cv = NeuralForecast([model], freq=1).cross_validation(df, n_windows=4, step_size=12,
                                                          verbose=False)
    assert cv.columns.tolist()[3:] == ["MLP", "MLP-median", "MLP-lo-90", "MLP-lo-80",
                                      "MLP-hi-80", "MLP-hi-90", "y"]
    for level in (80, 90):
        assert abs(_coverage(cv, "MLP", level) - level) <= 5, level
    with pytest.raises(ValueError, match="cannot return_params"):
        DistributionLoss("ISQF", return_params=True)
