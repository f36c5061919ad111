"""Parallel work with one argument: cross-validation, grid search, ensembles, inference."""

import warnings

import numpy as np
import pandas as pd
import pytest

from ndwork import NeuralForecast
from ndwork.datasets import synthetic_panel
from ndwork.models import MLP, NHITS
from ndwork.tuning import ensemble, grid_search

distributed = pytest.importorskip("distributed")



@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(6, 120, seed=11)


def mlp(**kwargs):
    return MLP(h=6, input_size=12, max_steps=15, hidden_size=16, windows_batch_size=32,
               scaler_type="standard", **kwargs)


def modes(client):
    return [("threads", "threads"), ("dask", client)]


@pytest.mark.parametrize("refit", [True, False])
@pytest.mark.parametrize("mode", ["threads", "dask"])
def test_cross_validation_in_parallel_equals_serial(client, panel, refit, mode):
    parallel = dict(modes(client))[mode]
    serial = NeuralForecast([mlp()], "D").cross_validation(panel, n_windows=3, step_size=6,
                                                           refit=refit, verbose=False)
    spread = NeuralForecast([mlp()], "D").cross_validation(panel, n_windows=3, step_size=6,
                                                           refit=refit, verbose=False,
                                                           parallel=parallel)
    pd.testing.assert_frame_equal(spread, serial)


def test_batch_inference_in_parallel_equals_serial(client, panel):
    nf = NeuralForecast([mlp()], "D").fit(panel, verbose=False)
    serial = nf.predict()
    for parallel in ("threads", client):
        pd.testing.assert_frame_equal(nf.predict(parallel=parallel), serial)


def test_grid_search_ranks_configurations(client, panel):
    grid = {"hidden_size": [8, 32], "learning_rate": [1e-3, 1e-2]}
    serial = grid_search(MLP, grid, panel, "D", h=6, input_size=12, max_steps=20,
                         windows_batch_size=32, scaler_type="standard")
    assert len(serial) == 4 and list(serial.columns[:2]) == ["hidden_size", "learning_rate"]
    assert serial.valid_loss.is_monotonic_increasing
    assert (serial.status == "trained").all() and (serial.steps == 20).all()
    spread = grid_search(MLP, grid, panel, "D", h=6, input_size=12, max_steps=20,
                         windows_batch_size=32, scaler_type="standard", parallel=client)
    pd.testing.assert_frame_equal(spread, serial)


def test_successive_halving_and_time_budget(panel):
    grid = {"hidden_size": [4, 8, 16, 32]}
    halved = grid_search(MLP, grid, panel, "D", h=6, input_size=12, max_steps=40,
                         windows_batch_size=32, halving=True, parallel="threads")
    assert halved.steps.tolist()[0] == 40  # the winner trained fully
    assert sorted(halved.steps.tolist()) == [10, 10, 20, 40]
    assert halved.status.str.startswith("stopped by halving").sum() == 3
    none = grid_search(MLP, grid, panel, "D", h=6, input_size=12, max_steps=5,
                       time_budget_s=0)
    assert (none.status == "not run (time budget)").all() and none.valid_loss.isna().all()


def test_threads_for_training_say_to_use_dask_and_forecasting_stays_quiet(panel):
    with pytest.warns(UserWarning, match=r"parallel='threads' for training work .* "
                                         r"pass parallel=2 \(dask workers\)"):
        NeuralForecast([mlp()], "D").cross_validation(panel, n_windows=2, step_size=6,
                                                      refit=True, verbose=False,
                                                      parallel="threads")
    nf = NeuralForecast([mlp()], "D").fit(panel, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nf.predict(parallel="threads")
        nf.cross_validation(panel, n_windows=2, step_size=6, refit=False, verbose=False,
                            parallel="threads")


def test_grid_search_names_unknown_options(panel):
    with pytest.raises(ValueError, match=r"grid names \['hidden'\] are not MLP options"):
        grid_search(MLP, {"hidden": [8]}, panel, "D", h=6, input_size=12)


def test_ensemble_of_seeds(client, panel):
    members = [NHITS(h=6, input_size=12, max_steps=10, mlp_units=[[8, 8]], random_seed=s,
                     windows_batch_size=32, alias=f"NHITS{s}") for s in range(4)]
    serial = ensemble(members, panel, "D", level=[80])
    assert list(serial.columns) == ["unique_id", "ds", "Ensemble", "Ensemble-lo-80",
                                    "Ensemble-hi-80"]
    # against the members fitted one by one: the median and the 10th / 90th percentiles
    alone = np.stack([NeuralForecast([m], "D").fit(panel, verbose=False).predict()[repr(m)]
                      for m in members])
    np.testing.assert_allclose(serial["Ensemble"], np.median(alone, axis=0), rtol=1e-6)
    np.testing.assert_allclose(serial["Ensemble-lo-80"], np.percentile(alone, 10, axis=0),
                               rtol=1e-6)
    np.testing.assert_allclose(serial["Ensemble-hi-80"], np.percentile(alone, 90, axis=0),
                               rtol=1e-6)
    pd.testing.assert_frame_equal(ensemble(members, panel, "D", level=[80], parallel=client),
                                  serial)
    mean = ensemble(members, panel, "D", combine="mean")
    assert not np.allclose(mean.Ensemble, serial.Ensemble)


def test_thread_pool_tasks_run_numba_and_gemm_blas_on_one_thread_each():
    import numba
    from threadpoolctl import threadpool_info

    from ndwork.distributed.pool import executor

    def threads_seen(_):
        numpy_blas = [p["num_threads"] for p in threadpool_info() if "numpy" in p["filepath"]]
        return numba.get_num_threads(), numpy_blas

    with executor("threads") as pool:
        seen = pool.map(threads_seen, range(4))
    assert seen == [(1, [1])] * 4


def test_dask_worker_tasks_run_on_one_thread_each(client):
    """Whatever the worker process's numba read at import and however many cores oneDNN's
    TBB would take, a task runs single-threaded: two workers on two cores do not
    oversubscribe them."""
    from ndwork.distributed.pool import DaskWorkers

    def threads_seen(_):
        import numba

        from ndwork.config import active
        from ndwork.kernels import gemm

        big = np.ones((512, 512), np.float32)
        return active().threads, numba.get_num_threads(), gemm._blas_for(big, big).__name__

    seen = DaskWorkers(client).map(threads_seen, range(2))
    assert [s[:2] for s in seen] == [(1, 1)] * 2
    assert all(s[2] != "onednn_matmul" for s in seen)
