"""from_neuralforecast: every model both libraries have, saved by NeuralForecast, loaded
into ndwork, forecasts as NeuralForecast forecasts (1e-4 of the largest forecast)."""

import numpy as np
import pandas as pd
import pytest
from conftest import NF_QUIET

from ndwork.datasets import air_passengers
from ndwork.interop import from_neuralforecast

H, INPUT = 12, 24
# models both libraries have, with options that keep a fit short
# (Informer with factor=8: its ProbSparse attention then reads every key and query, as
# NeuralForecast draws the sampled ones at random; DeepAR with MAE decodes its forecast
# deterministically, its distribution's paths being random draws on both sides)
BOTH = {"MLP": {}, "NHITS": {}, "NBEATS": {}, "NBEATSx": {}, "TiDE": {}, "DLinear": {},
        "NLinear": {}, "PatchTST": {}, "VanillaTransformer": {}, "Informer": {"factor": 8},
        "iTransformer": {"n_series": 2}, "RNN": {}, "LSTM": {}, "GRU": {}, "TCN": {},
        "BiTCN": {}, "DilatedRNN": {}, "DeepAR": {"loss": "MAE"}, "DeepNPTS": {}, "xLSTM": {},
        "TSMixer": {"n_series": 2}, "TSMixerx": {"n_series": 2}, "XLinear": {"n_series": 2},
        "MLPMultivariate": {"n_series": 2}, "SOFTS": {"n_series": 2},
        "SOFTSSharp": {"n_series": 2}, "RMoK": {"n_series": 2}, "KAN": {},
        "StemGNN": {"n_series": 2}, "TimeMixer": {"n_series": 2}, "Autoformer": {},
        "FEDformer": {}, "TimeXer": {"n_series": 2}, "TimesNet": {},
        "TFT": {}}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def panel():
    df = air_passengers()
    return pd.concat([df, df.assign(unique_id="Scaled", y=df.y * 1.5 + 20)], ignore_index=True)


@pytest.fixture(scope="module")
def exogenous_panel(panel):
    """(train, static, future): the panel with two variables per exogenous stream (with
    one, variable-major and time-major orders agree), two statics, and the future
    values of the known ones."""
    rng = np.random.default_rng(0)
    df = panel.assign(**{c: rng.normal(size=len(panel)) for c in ("f", "g", "x", "z")})
    static = pd.DataFrame({"unique_id": df.unique_id.unique(), "s": [1.0, -2.0],
                           "t": [0.5, 3.0]})
    train = df.groupby("unique_id").head(len(df) // 2 - H)
    future = df.groupby("unique_id").tail(H)[["unique_id", "ds", "f", "g"]]
    return train, static, future


@pytest.mark.parametrize("name", sorted(BOTH))
def test_a_neuralforecast_checkpoint_forecasts_the_same_in_ndwork(name, panel, tmp_path):
    import neuralforecast
    import neuralforecast.models
    from neuralforecast.losses.pytorch import MAE

    from ndwork.bench.fidelity import vanilla_slstm

    options = dict(h=H, input_size=INPUT, max_steps=2, scaler_type="robust", **BOTH[name])
    if options.get("loss") == "MAE":
        options.update(loss=MAE(), valid_loss=MAE())
    with vanilla_slstm():
        peer = getattr(neuralforecast.models, name)(**options, **NF_QUIET)
        nf = neuralforecast.NeuralForecast([peer], freq="MS", local_scaler_type="standard")
        nf.fit(panel)
        expected = nf.predict()
    nf.save(str(tmp_path / "nf"), overwrite=True)
    ours = from_neuralforecast(tmp_path / "nf")
    assert type(ours.models[0]).__name__ == name
    assert ours.models[0].num_parameters() == sum(p.numel() for p in peer.parameters())
    got = ours.predict()
    assert got.columns.tolist() == expected.columns.tolist()
    assert (got.unique_id.to_numpy() == expected.unique_id.to_numpy()).all()
    column = repr(ours.models[0])
    theirs, mine = expected[column].to_numpy(), got[column].to_numpy()
    error = np.abs(mine - theirs).max() / np.abs(theirs).max()
    assert error <= TOLERANCE, f"{name}: max relative error {error:.2e}"


def test_without_neuralforecast_it_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "neuralforecast", None)
    with pytest.raises(ValueError, match="install it"):
        from_neuralforecast(tmp_path)


# the multivariate models that read exogenous variables: their layouts of (window,
# variable, time, series) against NeuralForecast's
MULTIVARIATE_EXOG = ["TSMixerx", "MLPMultivariate", "XLinear", "KAN", "TimeXer"]


@pytest.mark.parametrize("name", MULTIVARIATE_EXOG)
def test_multivariate_exogenous_layouts_match_neuralforecast(name, exogenous_panel,
                                                             tmp_path):
    import neuralforecast
    import neuralforecast.models

    train, static, future = exogenous_panel
    cls = getattr(neuralforecast.models, name)
    options = dict(h=H, input_size=INPUT, n_series=2, max_steps=2, scaler_type="robust",
                   hist_exog_list=["x", "z"], stat_exog_list=["s", "t"])
    if cls.EXOGENOUS_FUTR:
        options["futr_exog_list"] = ["f", "g"]
    else:
        train, future = train.drop(columns=["f", "g"]), None
    peer = cls(**options, **NF_QUIET)
    nf = neuralforecast.NeuralForecast([peer], freq="MS")
    nf.fit(train, static_df=static)
    expected = nf.predict(futr_df=future)
    nf.save(str(tmp_path / "nf"), overwrite=True)
    got = from_neuralforecast(tmp_path / "nf").predict(futr_df=future)
    theirs, mine = expected[name].to_numpy(), got[name].to_numpy()
    error = np.abs(mine - theirs).max() / np.abs(theirs).max()
    assert error <= TOLERANCE, f"{name}: max relative error {error:.2e}"


# a second configuration of each model of the multivariate and frequency-domain issues:
# parameter counts and forecasts against NeuralForecast's at options other than the
# defaults (FEDformer's 5 of 12 modes: drawn from the seed as NeuralForecast draws them)
SECOND = {
    "TSMixer": dict(n_block=3, ff_dim=16, revin=False, dropout=0.2),
    "TSMixerx": dict(n_block=1, ff_dim=8, dropout=0.3, revin=False),
    "MLPMultivariate": dict(num_layers=3, hidden_size=64),
    "SOFTS": dict(hidden_size=32, d_core=16, e_layers=3, d_ff=64, use_norm=False),
    "SOFTSSharp": dict(hidden_size=32, d_core=16, e_layers=1, d_ff=64, pe_keep_prob=0.8),
    "XLinear": dict(hidden_size=32, temporal_ff=64, channel_ff=4, use_norm=False),
    "TimeMixer": dict(channel_independence=1, decomp_method="dft_decomp", top_k=3,
                      down_sampling_layers=2, down_sampling_method="max", d_model=16,
                      e_layers=2, d_ff=24),
    "StemGNN": dict(multi_layer=2, leaky_rate=0.1),
    "RMoK": dict(taylor_order=4, jacobi_degree=3, wavelet_function="morlet",
                 revin_affine=False),
    "KAN": dict(n_hidden_layers=2, hidden_size=[32, 16], grid_size=4, spline_order=2,
                grid_range=[-2, 2]),
    "Autoformer": dict(hidden_size=32, n_head=2, conv_hidden_size=16, encoder_layers=1,
                       decoder_layers=2, MovingAvg_window=5, factor=2, activation="relu",
                       decoder_input_size_multiplier=0.4),
    "TimesNet": dict(hidden_size=16, conv_hidden_size=8, top_k=3, num_kernels=3,
                     encoder_layers=3, dropout=0.2),
    "TimeXer": dict(patch_len=5, hidden_size=32, n_heads=4, e_layers=3, d_ff=16,
                    use_norm=False),
    "FEDformer": dict(modes=5, hidden_size=32, conv_hidden_size=16, encoder_layers=3,
                      decoder_layers=2, MovingAvg_window=7, random_seed=7),
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_a_second_configuration_matches_neuralforecast(name, panel, tmp_path):
    import neuralforecast
    import neuralforecast.models

    options = dict(h=H, input_size=INPUT, max_steps=2, scaler_type="robust", **SECOND[name])
    cls = getattr(neuralforecast.models, name)
    if cls.MULTIVARIATE:
        options["n_series"] = 2
    peer = cls(**options, **NF_QUIET)
    nf = neuralforecast.NeuralForecast([peer], freq="MS")
    nf.fit(panel)
    expected = nf.predict()
    nf.save(str(tmp_path / "nf"), overwrite=True)
    ours = from_neuralforecast(tmp_path / "nf")
    assert ours.models[0].num_parameters() == sum(p.numel() for p in peer.parameters())
    theirs, mine = expected[name].to_numpy(), ours.predict()[name].to_numpy()
    error = np.abs(mine - theirs).max() / np.abs(theirs).max()
    assert error <= TOLERANCE, f"{name}: max relative error {error:.2e}"


WITH_N_SERIES = sorted(name for name, options in BOTH.items() if "n_series" in options)


@pytest.mark.parametrize("name", WITH_N_SERIES)
def test_multivariate_models_line_up_series_of_different_spans_as_neuralforecast(
        name, panel, tmp_path):
    """One series starts 9 years late and ends 3 months early: both libraries line the
    series up on their last points (the short one padded on the left, masked, in
    training) and forecast each after its own end."""
    import neuralforecast
    import neuralforecast.models

    scaled = panel.unique_id == "Scaled"
    last = panel.ds.max() - pd.DateOffset(months=3)
    ragged = panel[~scaled | ((panel.ds > last - pd.DateOffset(months=INPUT + 6))
                              & (panel.ds <= last))]
    peer = getattr(neuralforecast.models, name)(h=H, input_size=INPUT, max_steps=2,
                                                scaler_type="robust", n_series=2, **NF_QUIET)
    nf = neuralforecast.NeuralForecast([peer], freq="MS")
    nf.fit(ragged)
    expected = nf.predict()
    nf.save(str(tmp_path / "nf"), overwrite=True)
    got = from_neuralforecast(tmp_path / "nf").predict()
    pd.testing.assert_frame_equal(got[["unique_id", "ds"]], expected[["unique_id", "ds"]],
                                  check_dtype=False)
    theirs, mine = expected[name].to_numpy(), got[name].to_numpy()
    error = np.abs(mine - theirs).max() / np.abs(theirs).max()
    assert error <= TOLERANCE, f"{name}: max relative error {error:.2e}"


@pytest.mark.parametrize("reconciliation", ["BottomUp", "MinTraceOLS", "MinTraceWLS"])
def test_hint_reconciliation_matrices_are_neuralforecasts(reconciliation):
    from neuralforecast.models import hint

    from ndwork.datasets import us_employment_hierarchy
    from ndwork.models.hint import RECONCILIATIONS

    S = us_employment_hierarchy()[1].to_numpy()
    theirs = {"BottomUp": hint.get_bottomup_P, "MinTraceOLS": hint.get_mintrace_ols_P,
              "MinTraceWLS": hint.get_mintrace_wls_P}[reconciliation](S)
    np.testing.assert_allclose(RECONCILIATIONS[reconciliation](S), theirs, atol=1e-12)


MULTIVARIATE = sorted(n for n in SECOND
                      if n not in ("KAN", "Autoformer", "FEDformer", "TimesNet"))


@pytest.mark.parametrize("name", MULTIVARIATE)
def test_multivariate_quantile_outputs_match_neuralforecast(name, panel, tmp_path):
    """With several outputs per step (MQLoss) NeuralForecast's multivariate forecast
    (W, h, N * Q) is split series-major; ndwork reads it the same way."""
    import neuralforecast
    import neuralforecast.models
    from neuralforecast.losses.pytorch import MQLoss

    peer = getattr(neuralforecast.models, name)(
        h=H, input_size=INPUT, n_series=2, max_steps=2, scaler_type="robust",
        loss=MQLoss(level=[80]), valid_loss=MQLoss(level=[80]), **NF_QUIET)
    nf = neuralforecast.NeuralForecast([peer], freq="MS")
    nf.fit(panel)
    expected = nf.predict()
    nf.save(str(tmp_path / "nf"), overwrite=True)
    got = from_neuralforecast(tmp_path / "nf").predict()
    columns = [c for c in expected.columns if c.startswith(name)]
    assert len(columns) == 3 and columns == [c for c in got.columns if c.startswith(name)]
    # ndwork sorts each step's quantiles so they never cross (README); NF's may, untrained
    ordered = [f"{name}-lo-80", f"{name}-median", f"{name}-hi-80"]
    theirs, mine = np.sort(expected[ordered].to_numpy(), axis=1), got[ordered].to_numpy()
    error = np.abs(mine - theirs).max() / np.abs(theirs).max()
    assert error <= TOLERANCE, f"{name}: max relative error {error:.2e}"


@pytest.mark.parametrize("name", ["MLPMultivariate", "XLinear"])
def test_training_steps_on_neuralforecasts_batches_match_its_losses(name, monkeypatch):
    """NeuralForecast's training batches (captured), replayed through ndwork's loss,
    gradient and Adam from NeuralForecast's initial weights: the same losses, step by
    step. (NeuralForecast's batches hold the series in a new random order each step; an
    ndwork fit keeps their order: README.)"""
    import neuralforecast
    import neuralforecast.models

    from ndwork.interop import torch_to_ndwork
    from ndwork.models import MODELS
    from ndwork.training.trainer import initial_state, loss_and_grad

    df = air_passengers()
    panel = pd.concat([df, df.assign(unique_id="B", y=df.y * 0.5 + np.arange(len(df))),
                       df.assign(unique_id="C", y=np.sqrt(df.y) * 10)], ignore_index=True)
    peer = getattr(neuralforecast.models, name)(h=H, input_size=INPUT, n_series=3,
                                                max_steps=20, scaler_type="standard",
                                                **NF_QUIET)
    initial = [(n, p.detach().double().numpy().copy()) for n, p in peer.named_parameters()]
    steps = []
    forward, loss_call = type(peer).forward, type(peer.loss).__call__

    def capture_forward(self, batch):  # on the class: NeuralForecast trains a copy
        steps.append({"x": batch["insample_y"].detach().numpy().copy()})
        return forward(self, batch)

    def capture_loss(self, y, y_hat, y_insample=None, mask=None):
        out = loss_call(self, y=y, y_hat=y_hat, y_insample=y_insample, mask=mask)
        steps[-1].update(y=y.detach().numpy().copy(), mask=mask.detach().numpy().copy(),
                         loss=float(out))
        return out

    monkeypatch.setattr(type(peer), "forward", capture_forward)
    monkeypatch.setattr(type(peer.loss), "__call__", capture_loss)
    neuralforecast.NeuralForecast([peer], freq="MS").fit(panel)
    model = MODELS[name](h=H, input_size=INPUT, n_series=3, scaler_type="standard")
    state = initial_state(model)
    state.params = torch_to_ndwork(initial, model.spec.shapes).astype(np.float32)
    ours = []
    for step in steps:
        w = step["x"].shape[0]
        rows = {k: np.ascontiguousarray(step[k].transpose(0, 2, 1).reshape(w * 3, -1))
                for k in ("x", "y", "mask")}
        batch = {"insample_y": rows["x"], "insample_mask": np.ones_like(rows["x"]),
                 "outsample_y": rows["y"], "outsample_y_data": rows["y"],
                 "outsample_mask": rows["mask"], "hist_exog": None, "futr_exog": None,
                 "stat_exog": None, "y_shift": np.zeros(w * 3, np.float32),
                 "y_scale": np.ones(w * 3, np.float32)}
        loss, grads = loss_and_grad(model, state.params, batch)
        state.optimizer.update(state.params, grads, peer.learning_rate)
        ours.append(loss)
    np.testing.assert_allclose(ours, [s["loss"] for s in steps], rtol=1e-4)


@pytest.mark.parametrize("options", [
    dict(n_rnn_layers=2),
    dict(rnn_type="gru", n_rnn_layers=2, one_rnn_initial_state=True, grn_activation="GELU",
         hidden_size=32, n_head=2)], ids=["lstm", "gru"])
def test_tft_with_every_kind_of_exogenous_and_its_interpretation(options, exogenous_panel,
                                                                 tmp_path):
    """Static contexts, historical and known-future variables, two recurrent layers:
    forecasts, variable importances and attention weights as NeuralForecast's."""
    import neuralforecast
    from neuralforecast.models import TFT

    train, static, future = exogenous_panel
    peer = TFT(h=H, input_size=INPUT, max_steps=3, scaler_type="robust",
               futr_exog_list=["f", "g"], hist_exog_list=["x", "z"], stat_exog_list=["s", "t"],
               **options, **NF_QUIET)
    nf = neuralforecast.NeuralForecast([peer], freq="MS")
    nf.fit(train, static_df=static)
    expected = nf.predict(futr_df=future)
    theirs_model = nf.models[0]
    nf.save(str(tmp_path / "nf"), overwrite=True)
    ours = from_neuralforecast(tmp_path / "nf")
    got = ours.predict(futr_df=future)
    assert ours.models[0].num_parameters() == sum(p.numel() for p in peer.parameters())
    error = np.abs(got.TFT.to_numpy() - expected.TFT.to_numpy()).max() / expected.TFT.abs().max()
    assert error <= TOLERANCE, f"max relative error {error:.2e}"
    mine, theirs = ours.models[0].feature_importances(), theirs_model.feature_importances()
    assert list(mine) == list(theirs)
    for key in theirs:
        pd.testing.assert_frame_equal(mine[key], theirs[key].astype(np.float64), atol=1e-5,
                                      check_dtype=False)
    np.testing.assert_allclose(ours.models[0].attention_weights(),
                               theirs_model.attention_weights(), atol=1e-5)
