"""HINT: hierarchical forecasts reconciled to coherence on a public hierarchy."""

import numpy as np
import pandas as pd
import pytest

from ndwork import NeuralForecast
from ndwork.datasets import us_employment_hierarchy
from ndwork.losses import MAE, DistributionLoss
from ndwork.models import HINT, MLP
from ndwork.models.hint import RECONCILIATIONS

COHERENT_RTOL = 1e-5


@pytest.fixture(scope="module")
def hierarchy():
    df, S, tags = us_employment_hierarchy()
    return df, S, tags


def hint(S, reconciliation="BottomUp", **options):
    model = MLP(h=6, input_size=12, max_steps=20, hidden_size=32, scaler_type="robust",
                loss=DistributionLoss("Normal", level=[80], num_samples=200), **options)
    return HINT(h=6, S=S, model=model, reconciliation=reconciliation)


def incoherence(frame: pd.DataFrame, S: pd.DataFrame, column: str) -> float:
    """max |S @ bottom - all| relative to the largest forecast."""
    wide = frame.pivot(index="ds", columns="unique_id", values=column)[S.index].to_numpy()
    return np.abs(wide - wide[:, -S.shape[1]:] @ S.to_numpy().T).max() / np.abs(wide).max()


def test_the_public_hierarchy_adds_up(hierarchy):
    df, S, tags = hierarchy
    assert S.shape == (22, 15) and len(tags["Bottom"]) == 15
    assert (S.index == np.sort(df.unique_id.unique())).all()  # the data's order, bottom last
    assert incoherence(df, S, "y") < 1e-5  # BLS's rounding


@pytest.mark.parametrize("reconciliation", ["BottomUp", "MinTraceOLS", "MinTraceWLS"])
def test_reconciled_forecasts_are_coherent(hierarchy, reconciliation, tmp_path):
    df, S, _ = hierarchy
    train = df.groupby("unique_id").head(108)
    nf = NeuralForecast([hint(S.to_numpy(), reconciliation)], "MS").fit(train, verbose=False)
    fcst = nf.predict()
    assert fcst.columns.tolist() == ["unique_id", "ds", "HINT", "HINT-median", "HINT-lo-80",
                                     "HINT-hi-80"]
    assert incoherence(fcst, S, "HINT") <= COHERENT_RTOL
    assert (fcst["HINT-lo-80"] <= fcst["HINT-hi-80"]).all()
    nf.save(tmp_path / "hint")
    pd.testing.assert_frame_equal(fcst, NeuralForecast.load(tmp_path / "hint").predict())
    cv = nf.cross_validation(df, n_windows=2, step_size=6, verbose=False)
    for cutoff, window in cv.groupby("cutoff"):
        assert incoherence(window, S, "HINT") <= COHERENT_RTOL, cutoff


def test_identity_leaves_the_forecasts_unreconciled(hierarchy):
    df, S, _ = hierarchy
    train = df.groupby("unique_id").head(108)
    fcst = NeuralForecast([hint(S.to_numpy(), "Identity")], "MS").fit(train, verbose=False) \
        .predict()
    assert incoherence(fcst, S, "HINT") > 10 * COHERENT_RTOL  # the check above can fail


@pytest.mark.parametrize("reconciliation", ["BottomUp", "MinTraceOLS", "MinTraceWLS"])
def test_reconciliation_is_a_projection_onto_coherent_forecasts(hierarchy, reconciliation):
    _, S, _ = hierarchy
    S = S.to_numpy()
    SP = S @ RECONCILIATIONS[reconciliation](S)
    np.testing.assert_allclose(SP @ SP, SP, atol=1e-9)  # idempotent
    np.testing.assert_allclose(SP @ S, S, atol=1e-9)  # coherent data stays as it is
    draws = np.random.default_rng(0).normal(size=(len(S), 6, 50))
    model = hint(S, reconciliation)
    out = model.reconcile(draws)  # every draw adds up: S @ its bottom series
    np.testing.assert_allclose(out, np.einsum("ij,jhp->ihp", S, out[-S.shape[1]:]), atol=1e-9)


@pytest.mark.parametrize("change,match", [
    (dict(S=np.ones((3, 2))), "identity"),
    (dict(S=np.eye(3)), "more rows than columns"),
    (dict(S=np.array([[2.0, 1.0], [1, 0], [0, 1]])), "only 0 and 1"),
    (dict(reconciliation="MinTraceShrink"), "not one NeuralForecast has"),
    (dict(model=MLP(h=6, input_size=12, loss=MAE())), "distribution output"),
    (dict(h=4), "h=6"),
])
def test_bad_hint_arguments(change, match):
    args = dict(h=6, S=np.array([[1.0, 1.0], [1, 0], [0, 1]]), reconciliation="BottomUp",
                model=MLP(h=6, input_size=12, loss=DistributionLoss("Normal")))
    with pytest.raises(ValueError, match=match):
        HINT(**{**args, **change})


def test_hint_refuses_data_its_matrix_does_not_fit(hierarchy):
    df, S, _ = hierarchy
    model = hint(S.to_numpy())
    fewer = df[df.unique_id != S.index[0]]
    with pytest.raises(ValueError, match="S has 22 rows .* the data has 21 series"):
        NeuralForecast([model], "MS").fit(fewer, verbose=False)
    with pytest.raises(ValueError, match="local_scaler_type"):
        NeuralForecast([model], "MS", local_scaler_type="standard")


def test_a_sample_path_model_is_reconciled_too(hierarchy):
    """DeepAR's forecasts are trajectories: HINT reconciles those paths."""
    from ndwork.models import DeepAR

    df, S, _ = hierarchy
    model = DeepAR(h=6, input_size=12, max_steps=5, lstm_hidden_size=8, trajectory_samples=40)
    hint_model = HINT(h=6, S=S.to_numpy(), model=model, reconciliation="MinTraceWLS")
    fcst = NeuralForecast([hint_model], "MS").fit(df.groupby("unique_id").head(108),
                                                  verbose=False).predict(level=[90])
    assert fcst.columns.tolist() == ["unique_id", "ds", "HINT", "HINT-lo-90", "HINT-hi-90"]
    assert incoherence(fcst, S, "HINT") <= COHERENT_RTOL


def test_simulated_paths_add_up(hierarchy):
    df, S, _ = hierarchy
    nf = NeuralForecast([hint(S.to_numpy(), "MinTraceOLS")], "MS").fit(
        df.groupby("unique_id").head(108), verbose=False)
    paths = nf.simulate(n_paths=5)
    assert len(paths) == 22 * 6 * 5
    for _, path in paths.groupby("sample_id"):
        assert incoherence(path, S, "HINT") <= COHERENT_RTOL
