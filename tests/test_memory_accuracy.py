"""Memory bound of fit on a long series, and accuracy on AirPassengers."""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from ndwork import NeuralForecast
from ndwork.datasets import air_passengers
from ndwork.models import MLP, NBEATS, NHITS

MIB = 2**20
LONG_SERIES_BUDGET = 256 * MIB


def test_fit_on_a_million_points_stays_within_budget():
    """Windows are gathered per step: extra memory follows windows_batch_size."""
    n = 1_000_000
    t = np.arange(n)
    df = pd.DataFrame({"unique_id": "long", "ds": t,
                       "y": (np.sin(t / 50) + 0.01 * (t % 97)).astype(np.float32)})
    model = MLP(h=24, input_size=96, max_steps=20, hidden_size=64, windows_batch_size=1024,
                scaler_type="standard")
    nf = NeuralForecast([model], freq=1)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    nf.fit(df, verbose=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - base < LONG_SERIES_BUDGET, f"fit added {(peak - base) / MIB:.0f} MiB"
    assert len(nf.predict()) == 24


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    """A step frees and reallocates the same 4 MiB activations: with glibc's defaults each
    step faulted about 4,300 pages in again (a fifth of the step's wall time)."""
    script = textwrap.dedent("""
        import resource
        from ndwork import NeuralForecast
        from ndwork.datasets import synthetic_panel
        from ndwork.models import MLP
        df = synthetic_panel(16, 300, seed=0)
        fit = lambda steps: NeuralForecast([MLP(h=12, input_size=24, max_steps=steps)],
                                           "D").fit(df, verbose=False)
        fit(2), fit(2)  # the first training step of a process sets the allocator
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fit(10)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert float(out.split()[-1]) < 400  # pages faulted in a step (4 KiB each)


@pytest.mark.parametrize("cls,kwargs", [
    (MLP, dict(hidden_size=256, max_steps=300)),
    (NBEATS, dict(mlp_units=3 * [[128, 128]], max_steps=300)),
    (NHITS, dict(mlp_units=3 * [[128, 128]], max_steps=300)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_beats_seasonal_naive_on_air_passengers(cls, kwargs):
    df = air_passengers()
    train, test = df.iloc[:-12], df.iloc[-12:]
    model = cls(h=12, input_size=24, scaler_type="robust", windows_batch_size=256, **kwargs)
    fcst = NeuralForecast([model], "MS").fit(train, verbose=False).predict()
    mae = np.abs(fcst[cls.__name__].to_numpy() - test.y.to_numpy()).mean()
    seasonal_naive = np.abs(train.y.to_numpy()[-12:] - test.y.to_numpy()).mean()
    assert mae < seasonal_naive, f"{cls.__name__} MAE {mae:.1f} vs seasonal naive {seasonal_naive:.1f}"
