"""The op-level profiler: what it counts, and that it is off by default."""

import numpy as np
import pytest

import ndwork
from ndwork import NeuralForecast, profiling
from ndwork.datasets import air_passengers
from ndwork.models import MLP


def test_profile_counts_ops_flops_and_time():
    steps, windows, hidden = 4, 32, 16
    nf = NeuralForecast([MLP(h=12, input_size=24, max_steps=steps, hidden_size=hidden,
                             num_layers=2, windows_batch_size=windows)], "MS")
    nf.fit(air_passengers(), verbose=False)  # warm: kernels loaded
    with ndwork.profile() as prof:
        nf.fit(air_passengers(), verbose=False)
    table = prof.table().set_index("op")
    assert table.loc["linear", "calls"] == 3 * steps  # two hidden layers and the output
    multiply_adds = windows * (24 * hidden + hidden * hidden + hidden * 12)
    assert table.loc["linear", "GFLOP"] * 1e9 == pytest.approx(2 * steps * multiply_adds)
    assert table.loc["linear backward", "calls"] == 3 * steps
    assert table["share"].sum() == pytest.approx(1.0, abs=1e-6)
    assert set(table["hotspot"]) <= {label for _, label in profiling.HOTSPOT_CLASSES}
    assert prof.timeline and all(rss > 0 for _, rss, _ in prof.timeline)


def test_profiler_is_off_outside_the_block():
    assert profiling.current() is None
    with ndwork.profile(memory=False) as prof:
        assert profiling.current() is prof
    assert profiling.current() is None
    assert np.isfinite(prof.wall_seconds)
