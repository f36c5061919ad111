"""Data-parallel training on a real dask.distributed cluster (processes on 127.0.0.1)."""

import os
import signal

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from ndwork import NeuralForecast  # noqa: E402
from ndwork.datasets import synthetic_panel  # noqa: E402
from ndwork.distributed import connect  # noqa: E402
from ndwork.models import MLP, NHITS, TFT, Autoformer, XLinear  # noqa: E402

SAME_TRAJECTORY_ATOL = 1e-5
FAULT_LOSS_RTOL = 0.10


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(8, 200, seed=3)


def mlp(steps=20, **kwargs):
    return MLP(h=6, input_size=24, max_steps=steps, hidden_size=32, windows_batch_size=64,
               scaler_type="standard", **kwargs)


def losses(nf):
    return np.array([loss for _, loss in nf.states[0].train_losses])


def test_sync_every_step_equals_single_process(client, panel):
    alone = NeuralForecast([mlp()], "D").fit(panel, verbose=False)
    spread = NeuralForecast([mlp()], "D").fit(panel, distributed=client, verbose=False)
    np.testing.assert_allclose(losses(spread), losses(alone), atol=SAME_TRAJECTORY_ATOL)
    np.testing.assert_allclose(spread.states[0].params, alone.states[0].params, atol=1e-5)


def test_sync_every_step_with_dropout_equals_single_process(client, panel):
    """Dropout masks are keyed on (seed, step, window), not drawn per rank."""
    def model(dropout=0.3):
        return NHITS(h=6, input_size=24, max_steps=8, mlp_units=[[32, 32]] * 3,
                     dropout_prob_theta=dropout, windows_batch_size=64, scaler_type="standard")

    alone = NeuralForecast([model()], "D").fit(panel, verbose=False)
    spread = NeuralForecast([model()], "D").fit(panel, distributed=client, verbose=False)
    np.testing.assert_allclose(losses(spread), losses(alone), atol=SAME_TRAJECTORY_ATOL)
    np.testing.assert_allclose(spread.states[0].params, alone.states[0].params, atol=1e-5)
    without = NeuralForecast([model(0.0)], "D").fit(panel, verbose=False)
    assert np.abs(losses(without) - losses(alone)).max() > 1e-3  # dropout did act


def test_a_multivariate_model_splits_its_windows_across_workers(client, panel):
    """Each rank holds all series of its share of the windows: the trajectory (dropout
    keyed per window) equals one process's."""
    def model():
        return XLinear(h=6, input_size=24, n_series=8, max_steps=8, hidden_size=16,
                       temporal_ff=16, temporal_dropout=0.2, windows_batch_size=16,
                       scaler_type="standard")

    alone = NeuralForecast([model()], "D").fit(panel, verbose=False)
    spread = NeuralForecast([model()], "D").fit(panel, distributed=client, verbose=False)
    np.testing.assert_allclose(losses(spread), losses(alone), atol=SAME_TRAJECTORY_ATOL)
    np.testing.assert_allclose(spread.states[0].params, alone.states[0].params, atol=1e-5)
    assert spread.worker_switches is not None  # it ran on the workers


def test_tft_on_the_workers_equals_single_process(client, panel):
    """TFT's recurrent encoders, variable selection and attention, split by windows."""
    def model():
        return TFT(h=6, input_size=24, max_steps=6, hidden_size=8, n_head=2, dropout=0.2,
                   windows_batch_size=32, scaler_type="standard")

    alone = NeuralForecast([model()], "D").fit(panel, verbose=False)
    spread = NeuralForecast([model()], "D").fit(panel, distributed=client, verbose=False)
    np.testing.assert_allclose(losses(spread), losses(alone), atol=SAME_TRAJECTORY_ATOL)
    np.testing.assert_allclose(spread.states[0].params, alone.states[0].params, atol=1e-5)


def test_batch_dependent_lags_train_on_the_workers(client, panel):
    """Autoformer picks its training lags from the batch it sees, so each rank from its
    share (as NeuralForecast under DDP): the run differs from one process's but trains."""
    def model():
        return Autoformer(h=6, input_size=24, max_steps=10, hidden_size=16, n_head=2,
                          conv_hidden_size=8, MovingAvg_window=5, windows_batch_size=32,
                          learning_rate=3e-3, scaler_type="standard")

    spread = NeuralForecast([model()], "D").fit(panel, distributed=client, verbose=False)
    assert np.isfinite(losses(spread)).all() and spread.worker_switches is not None
    assert np.isfinite(spread.predict().Autoformer).all()


@pytest.mark.parametrize("sync_every", [1, 4])
def test_running_statistics_come_back_from_the_workers(client, panel, sync_every):
    from ndwork.models import PatchTST

    def model(steps):
        return PatchTST(h=6, input_size=24, max_steps=steps, hidden_size=16, n_heads=2,
                        linear_hidden_size=8, encoder_layers=2, windows_batch_size=32)

    steps = 4 if sync_every > 1 else 1
    nf = NeuralForecast([model(steps)], "D").fit(panel, distributed=client,
                                                 sync_every=sync_every, verbose=False)
    buffers = nf.states[0].buffers
    initial = model(1).spec.initial_buffers()
    for name, value in buffers.items():
        assert not np.allclose(value, initial[name]), f"{name} never left its initial value"
    if sync_every == 1:
        # after one step, the first BatchNorm's running mean is the share-weighted mean of
        # the ranks' batch means: the global batch's, as in one process
        alone = NeuralForecast([model(1)], "D").fit(panel, verbose=False).states[0].buffers
        first = next(name for name in buffers if name.endswith("running_mean"))
        np.testing.assert_allclose(buffers[first], alone[first], atol=1e-5)
    # predictions use the averaged statistics, not the initial ones
    forecast = nf.predict()
    state = nf.states[0]
    assert len(forecast) == 8 * 6
    nf.states[0] = type(state)(state.params, state.optimizer, state.rng, state.sampler_order,
                               initial)
    assert not np.allclose(nf.predict()["PatchTST"], forecast["PatchTST"])


def test_workers_run_under_the_drivers_optimizations(client, panel):
    import ndwork

    with ndwork.optimizations(kernels="numpy", attention="naive", blas="numpy"):
        nf = NeuralForecast([mlp(steps=2)], "D").fit(panel, distributed=client, verbose=False)
    assert nf.worker_switches == {"kernels": "numpy", "attention": "naive", "precision": "fp32",
                                  "blas": "numpy"}
    nf = NeuralForecast([mlp(steps=2)], "D").fit(panel, distributed=client, sync_every=2,
                                                 verbose=False)
    assert nf.worker_switches["kernels"] == "numba"


def test_local_steps_then_averaging_trains(client, panel):
    nf = NeuralForecast([mlp(steps=40)], "D").fit(panel, distributed=client, sync_every=8,
                                                  val_size=12, verbose=False)
    trajectory = losses(nf)
    assert len(trajectory) == 40
    assert trajectory[-8:].mean() < trajectory[:8].mean()
    assert len(nf.predict()) == 8 * 6
    # the optimizer moments stay on the workers: a round moves the parameters once each way
    assert nf.bytes_per_sync == 2 * nf.states[0].params.nbytes
    assert np.abs(nf.states[0].optimizer.buffers["v"]).sum() > 0  # moments brought back


def test_a_killed_worker_does_not_lose_the_run(client, panel):
    steps = 30
    baseline = NeuralForecast([mlp(steps)], "D").fit(panel, distributed=client, sync_every=2,
                                                     verbose=False)
    killed_at = []

    def kill_one_worker(step, loss, valid):
        if step == 12:  # 60% of the steps remain
            pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
            killed_at.append(step)

    nf = NeuralForecast([mlp(steps)], "D").fit(panel, distributed=client, sync_every=2,
                                               callback=kill_one_worker, verbose=False)
    assert killed_at and (steps - killed_at[0]) / steps >= 0.3
    assert len(losses(nf)) == steps
    final, reference = losses(nf)[-4:].mean(), losses(baseline)[-4:].mean()
    assert abs(final - reference) <= FAULT_LOSS_RTOL * reference
    client.wait_for_workers(2, timeout=60)  # the nanny brings a replacement


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, panel):
    path = tmp_path / "ckpt"
    whole = NeuralForecast([NHITS(h=6, input_size=24, max_steps=20, mlp_units=[[16, 16]],
                                  windows_batch_size=32)], "D").fit(panel, verbose=False)

    def interrupt(step, loss, valid):
        if step == 13:
            raise KeyboardInterrupt

    def model():
        return NHITS(h=6, input_size=24, max_steps=20, mlp_units=[[16, 16]], windows_batch_size=32)

    with pytest.raises(KeyboardInterrupt):
        NeuralForecast([model()], "D").fit(panel, checkpoint_every=5, checkpoint_path=path,
                                           callback=interrupt, verbose=False)
    resumed = NeuralForecast([model()], "D").fit(panel, resume_from=path, verbose=False)
    np.testing.assert_array_equal(resumed.states[0].params, whole.states[0].params)
    assert len(resumed.states[0].train_losses) == 20
    from_saved_data = NeuralForecast([model()], "D").fit(resume_from=path, verbose=False)
    np.testing.assert_array_equal(from_saved_data.states[0].params, whole.states[0].params)


def test_resume_refuses_other_models(tmp_path, panel):
    NeuralForecast([mlp(5)], "D").fit(panel, checkpoint_every=5, checkpoint_path=tmp_path / "c",
                                      verbose=False)
    with pytest.raises(ValueError, match="other models or hyper-parameters"):
        NeuralForecast([mlp(5, learning_rate=0.1)], "D").fit(panel, resume_from=tmp_path / "c")


def test_bad_distributed_arguments(panel):
    with (pytest.raises(ConnectionError, match="cannot reach a dask scheduler"),
          connect("tcp://127.0.0.1:9", timeout=2)):
        pass
    with (distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty,
          distributed.Client(empty) as no_workers,
          pytest.raises(ValueError, match="has no workers"),
          connect(no_workers, timeout=1)):
        pass
    with pytest.raises(ValueError, match="sync_every=0"):
        NeuralForecast([mlp()], "D").fit(panel, distributed=1, sync_every=0)
    with pytest.raises(ValueError, match="distributed=-1"), connect(-1):
        pass


def test_worker_settings_stay_out_of_this_process():
    before = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    with connect(1) as one:
        threads = one.run(lambda: os.environ.get("NUMBA_NUM_THREADS"))
    assert list(threads.values()) == ["1"]  # the worker is pinned ...
    assert {k: os.environ.get(k) for k in before} == before  # ... and this process is not


def test_a_script_without_the_main_guard_gets_one_clear_error(tmp_path):
    import subprocess
    import sys

    body = ("from ndwork import NeuralForecast\n"
            "from ndwork.datasets import synthetic_panel\n"
            "from ndwork.models import MLP\n"
            "nf = NeuralForecast([MLP(h=2, input_size=4, max_steps=1, hidden_size=4)], 'D')\n"
            "nf.fit(synthetic_panel(2, 40), distributed=1, verbose=False)\n"
            "print('trained')\n")
    unguarded = tmp_path / "unguarded.py"
    unguarded.write_text(body)
    guarded = tmp_path / "guarded.py"
    guarded.write_text("if __name__ == '__main__':\n"
                       + "".join(f"    {line}\n" for line in body.splitlines()))
    run = subprocess.run([sys.executable, str(unguarded)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "if __name__ == \"__main__\":" in run.stderr and "bootstrapping" not in run.stderr
    run = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "trained" in run.stdout, run.stderr[-2000:]


@pytest.mark.parametrize("sync_every", [1, 4])
def test_fp16_loss_scaling_runs_on_the_workers(client, panel, sync_every):
    """Both distributed paths carry the loss scaler: gradients averaged on the driver
    (one step a round) and local steps on the workers (the most cautious scale wins)."""
    import warnings

    import ndwork

    with ndwork.optimizations(precision="fp16"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ndwork.PrecisionFallbackWarning)
        nf = NeuralForecast([mlp(steps=8)], "D").fit(panel, distributed=client,
                                                     sync_every=sync_every, verbose=False)
    state = nf.states[0]
    assert nf.worker_switches["precision"] == "fp16" and state.precision == "fp16"
    assert state.loss_scaler is not None and state.loss_scaler.scale == 2.0**16
    assert state.optimizer.step == 8 and np.isfinite(state.params).all()
