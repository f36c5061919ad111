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
        "BiTCN": {}, "DilatedRNN": {}, "DeepAR": {"loss": "MAE"}, "DeepNPTS": {}, "xLSTM": {}}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def panel():
    df = air_passengers()
    return pd.concat([df, df.assign(unique_id="Scaled", y=df.y * 1.5 + 20)], ignore_index=True)


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
