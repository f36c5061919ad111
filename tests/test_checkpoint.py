"""Checkpoints: atomic, pickle-free, exact resume, and clear errors when damaged."""

import json
import zipfile

import numpy as np
import pytest

import ndwork
from ndwork import NeuralForecast
from ndwork.datasets import air_passengers
from ndwork.models import MLP, NHITS
from ndwork.training.checkpoint import CheckpointError


def fitted(max_steps=10, **kwargs):
    model = NHITS(h=12, input_size=24, max_steps=max_steps, mlp_units=[[16, 16]],
                  windows_batch_size=32, scaler_type="robust", **kwargs)
    return NeuralForecast([model], "MS").fit(air_passengers(), verbose=False)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "run"
    fitted().save(path)
    return path


def test_layout_has_no_pickle(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["dataset.npz", "model-0.npz",
                                                       "ndwork.json"]
    for npz in saved.glob("*.npz"):
        with np.load(npz, allow_pickle=False) as data:
            assert all(data[k].dtype != object for k in data.files)
            # numpy < 2.2 took savez's allow_pickle=False for an array of that name
            assert "allow_pickle" not in data.files
    meta = json.loads((saved / "ndwork.json").read_text())
    assert meta["ndwork_version"] == ndwork.__version__
    assert meta["models"][0]["class"] == "NHITS"


def test_resume_is_exact(tmp_path):
    """Save after 10 steps, load, train 10 more: same parameters as 10 + 10 in memory."""
    nf = fitted()
    nf.save(tmp_path / "a")
    nf.fit(warm_start=True, verbose=False)
    loaded = NeuralForecast.load(tmp_path / "a").fit(warm_start=True, verbose=False)
    np.testing.assert_array_equal(loaded.states[0].params, nf.states[0].params)
    np.testing.assert_array_equal(loaded.states[0].optimizer.buffers["v"],
                                  nf.states[0].optimizer.buffers["v"])


def test_save_refuses_to_overwrite_unless_asked(saved):
    nf = fitted(max_steps=3)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        nf.save(saved)
    nf.save(saved, overwrite=True)
    assert len(NeuralForecast.load(saved).states[0].train_losses) == 3
    assert [p.name for p in saved.parent.iterdir()] == ["run"]  # no temporary leftovers


def test_missing_file(saved):
    (saved / "model-0.npz").unlink()
    with pytest.raises(CheckpointError, match="model-0.npz is missing"):
        NeuralForecast.load(saved)


def test_missing_meta(saved):
    (saved / "ndwork.json").unlink()
    with pytest.raises(CheckpointError, match="no ndwork.json"):
        NeuralForecast.load(saved)


def test_truncated_file(saved):
    data = (saved / "model-0.npz").read_bytes()
    (saved / "model-0.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        NeuralForecast.load(saved)


def test_corrupt_meta(saved):
    (saved / "ndwork.json").write_text('{"format": 1, "models": [')
    with pytest.raises(CheckpointError, match="corrupt"):
        NeuralForecast.load(saved)


def test_different_model(saved, tmp_path):
    other = tmp_path / "other"
    NeuralForecast([MLP(h=12, input_size=24, max_steps=2, hidden_size=8)], "MS").fit(
        air_passengers(), verbose=False).save(other)
    (saved / "model-0.npz").write_bytes((other / "model-0.npz").read_bytes())
    with pytest.raises(CheckpointError, match="'params' has shape .* the hyper-parameters differ"):
        NeuralForecast.load(saved)


def test_mismatched_shapes(saved):
    meta = json.loads((saved / "ndwork.json").read_text())
    meta["models"][0]["hyperparameters"]["mlp_units"] = [[8, 8]]
    (saved / "ndwork.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="expects"):
        NeuralForecast.load(saved)


def test_other_version(saved):
    meta = json.loads((saved / "ndwork.json").read_text())
    meta["ndwork_version"] = "9.0.0"
    (saved / "ndwork.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="written by ndwork 9.0.0"):
        NeuralForecast.load(saved)


def test_npz_with_a_pickled_array_is_refused(saved):
    path = saved / "model-0.npz"
    with zipfile.ZipFile(path, "a") as z, z.open("evil.npy", "w") as f:
        np.lib.format.write_array(f, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        NeuralForecast.load(saved)


def test_a_pandas_offset_as_freq_round_trips(tmp_path):
    import pandas as pd

    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=2, hidden_size=8)],
                        freq=pd.offsets.MonthBegin())
    fcst = nf.fit(air_passengers(), verbose=False).predict()
    nf.save(tmp_path / "offset")
    pd.testing.assert_frame_equal(NeuralForecast.load(tmp_path / "offset").predict(), fcst)
