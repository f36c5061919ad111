"""Window sampling properties (hypothesis): inside one series, no horizon leakage."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndwork.data import Panel, WindowSampler, gather_windows


def make_panel(lengths):
    frames = [pd.DataFrame({"unique_id": f"u{i}", "ds": np.arange(n),
                            "y": 1000.0 * i + np.arange(n)}) for i, n in enumerate(lengths)]
    return Panel.from_frame(pd.concat(frames), freq=1)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(15, 80), min_size=1, max_size=6),  # >= 6 + 4 + 5
       input_size=st.integers(1, 6), h=st.integers(1, 4), step=st.integers(1, 3),
       holdout=st.integers(0, 5), batch_size=st.integers(1, 6), windows=st.integers(1, 50),
       seed=st.integers(0, 10_000))
def test_windows_lie_inside_one_series_before_the_holdout(lengths, input_size, h, step, holdout,
                                                          batch_size, windows, seed):
    """As NeuralForecast's right padding: a window's input part is inside the training
    part of one series and its horizon holds at least one training point; points past
    the end are zeros and masked."""
    panel = make_panel(lengths)
    train = panel.head(panel.lengths - holdout)
    sampler = WindowSampler(train, train.lengths, input_size, h, step, batch_size, windows)
    rng = np.random.default_rng(seed)
    seen_padding = False
    for _ in range(3):
        windows_ = sampler.sample(rng)
        assert windows_.shape == (windows, 2)
        w = gather_windows(train, windows_[:, 0], input_size + h, windows_[:, 1])
        inside = w["available"].astype(bool)
        assert inside[:, : input_size + 1].all()  # the inputs and the first target are real
        assert (np.diff(w["available"], axis=1) <= 0).all()  # padding only at the end
        assert (w["y"][~inside] == 0).all()
        seen_padding |= not inside.all()
        series, local = np.divmod(w["y"][:, :input_size + 1], 1000.0)
        # every real value of a window comes from one series, consecutive in time
        assert (series == series[:, :1]).all()
        assert (np.diff(local, axis=1) == 1).all()
        # windows start on the step grid and never reach the held-out tail
        sid = series[:, 0].astype(int)
        last_real = local[:, 0] + inside.sum(axis=1) - 1
        assert (last_real < panel.lengths[sid] - holdout).all()
        assert (local[:, 0] % step == 0).all()
    if h > 1 and step == 1 and windows >= 50 and len(lengths) == 1:
        assert seen_padding  # 150 draws of <= 80 windows: the padded ones show up


def test_the_last_windows_reach_past_the_end_as_neuralforecasts_padding():
    panel = make_panel([10])
    sampler = WindowSampler(panel, panel.lengths, 4, 3, 1, 1, 100)
    assert sampler.counts.tolist() == [6]  # starts 0..5: the last horizon holds one point
    w = gather_windows(panel, np.array([5]), 7)
    np.testing.assert_array_equal(w["y"][0], [5, 6, 7, 8, 9, 0, 0])
    np.testing.assert_array_equal(w["available"][0], [1, 1, 1, 1, 1, 0, 0])


def test_sampling_is_deterministic_under_the_seed():
    panel = make_panel([50, 60, 70])
    draws = []
    for _ in range(2):
        sampler = WindowSampler(panel, panel.lengths, 5, 2, 1, 2, 16)
        rng = np.random.default_rng(42)
        draws.append([sampler.sample(rng) for _ in range(5)])
    np.testing.assert_array_equal(draws[0], draws[1])


@pytest.mark.parametrize("drop_last", [False, True])
def test_an_epochs_last_smaller_batch_of_series_as_neuralforecasts_drop_last_loader(drop_last):
    """5 series in batches of 2: NeuralForecast's loader gives 2, 2, 1 per epoch (or 2, 2
    with drop_last_loader=True)."""
    panel = make_panel([30] * 5)
    sampler = WindowSampler(panel, panel.lengths, 4, 2, 1, 2, 8, drop_last=drop_last)
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(6):
        sizes.append(len(set(sampler.sample(rng)[:, 1])))
    assert sizes[:3] == ([2, 2, 2] if drop_last else [2, 2, 1])


def test_start_padding_adds_the_windows_that_begin_before_a_series():
    """NeuralForecast's start_padding_enabled: windows from input_size - 1 points before
    the series' start, padded with zeros that are marked unavailable."""
    panel = make_panel([10])
    plain = WindowSampler(panel, panel.lengths, 4, 3, 1, 1, 100)
    padded = WindowSampler(panel, panel.lengths, 4, 3, 1, 1, 100, start_padding=True)
    np.testing.assert_array_equal(plain.local, np.arange(0, 6))
    np.testing.assert_array_equal(padded.local, np.arange(-3, 6))
    w = gather_windows(panel, np.array([-3]), 7, np.array([0]))
    np.testing.assert_array_equal(w["y"][0], [0, 0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(w["available"][0], [0, 0, 0, 1, 1, 1, 1])


def test_availability_threshold_keeps_windows_with_enough_real_points():
    panel = make_panel([10])
    # inputs at least 3 of 4 real, horizon at least 2 of 3 real
    sampler = WindowSampler(panel, panel.lengths, 4, 3, 1, 1, 100, start_padding=True,
                            min_available=(3, 2))
    np.testing.assert_array_equal(sampler.local, np.arange(-1, 5))
    with pytest.raises(ValueError, match="no series has a training window.*lower training_d"):
        WindowSampler(make_panel([3, 2]), np.array([3, 2]), 4, 3, 1, 1, 100, start_padding=True,
                      min_available=(3, 2))


def test_series_of_input_size_points_are_forecast_not_trained_on():
    """As NeuralForecast: a series needs input_size training points; one with no window
    (exactly input_size) is left out of the steps, with a warning; shorter ones raise."""
    panel = make_panel([10, 4, 12])
    with pytest.warns(UserWarning, match=r"\['u1'\] \(1 in all\) have no training window"):
        sampler = WindowSampler(panel, panel.lengths, 4, 3, 1, 3, 100)
    assert sampler.batch_size == 2
    rng = np.random.default_rng(0)
    drawn = np.concatenate([sampler.sample(rng)[:, 1] for _ in range(20)])
    assert set(drawn.tolist()) == {0, 2}
    with pytest.raises(ValueError, match=r"\['u1'\] \(1 in all\) have fewer training points "
                                         r"than input_size=5 .*start_padding_enabled=True"):
        WindowSampler(panel, panel.lengths, 5, 3, 1, 3, 100)
    with pytest.raises(ValueError, match="no series has a training window.*input_size \\+ 1"):
        WindowSampler(make_panel([4, 4]), np.array([4, 4]), 4, 3, 1, 1, 100)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8), data=st.data())
def test_subset_and_head_keep_each_series_rows(lengths, data):
    """A panel's series picked by position (a batch forecast's chunks) and cut to their
    first points hold exactly those rows, in order."""
    panel = make_panel(lengths)
    picked = np.array(sorted(data.draw(st.sets(st.integers(0, len(lengths) - 1), min_size=1))))
    part = panel.subset(picked)
    assert part.uids.tolist() == [f"u{i}" for i in picked]
    assert part.y.tolist() == [1000.0 * i + t for i in picked for t in range(lengths[i])]
    keep = np.array([data.draw(st.integers(0, n)) for n in lengths])
    first = panel.head(keep)
    assert first.y.tolist() == [1000.0 * i + t for i, n in enumerate(keep) for t in range(n)]
    assert first.lengths.tolist() == keep.tolist()
