"""The dask backend of the training loop: a round of `sync_every` steps on workers.

sync_every=1: each step's global batch is split into one share per logical rank;
every rank returns the mean loss and gradient of its share; the driver averages them
(weighted by share size, so it is exactly the gradient of the global batch) and
applies the optimizer: the trajectory equals single-process training.
sync_every=K>1 (local SGD): every rank runs K optimizer steps on its shares of the K
global batches from the last averaged parameters, with its own optimizer moments, which
stay on its worker between rounds (a future handed to the next round's task), so a
synchronization moves the parameters once each way; the driver averages parameters and
running statistics once per round, and the ranks' moments when training ends.

Ranks are logical and fixed (batches and seeds depend on rank and step, never on
which worker is alive); tasks hold no state, and the data is a task result with
lineage, so dask recomputes whatever a dead worker held and retries its tasks.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from ndwork.distributed.pool import _hold, quiet_large_graphs, replicate
from ndwork.training.trainer import LocalSteps, TrainingDiverged, diverged, initial_state

RESULT_TIMEOUT_S = 600
RETRIES = 3


@functools.lru_cache(maxsize=8)
def _model(class_name: str, hyperparameters: str):
    """The model rebuilt on a worker, once per worker and configuration."""
    from ndwork.models import MODELS

    return MODELS[class_name](**json.loads(hyperparameters))


def _rank_gradient(model_key, params, buffers, panel, starts, seed):
    """Mean loss and gradient of one rank's share of a global batch."""
    from ndwork.training.trainer import loss_and_grad, make_batch

    model = _model(*model_key)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, grads = loss_and_grad(model, params, make_batch(model, panel, starts),
                                    np.random.default_rng(seed), {k: v.copy() for k, v in
                                                                  buffers.items()})
    return loss, grads, len(starts)


def _pick(result, index):
    return result[index]


def _rank_local_steps(model_key, params, moments, step, buffers, panel, batches, lrs, seed):
    """K optimizer steps of one rank from the last averaged state (local SGD)."""
    from ndwork.training.trainer import LocalSteps

    model = _model(*model_key)
    state = initial_state(model)
    state.params, state.buffers = params.copy(), {k: v.copy() for k, v in buffers.items()}
    state.optimizer.buffers = {k: v.copy() for k, v in moments.items()}
    state.optimizer.step = step
    state.rng = np.random.default_rng(seed)
    losses = LocalSteps().run(model, panel, state, batches, lrs)
    return losses, state.params, state.optimizer.buffers, state.buffers


class DaskSteps:
    """Runs rounds of training steps on a dask client with `ranks` logical ranks."""

    def __init__(self, client, ranks: int | None = None):
        self.client = client
        self.ranks = ranks or max(1, len(client.scheduler_info()["workers"]))
        self._panel_key = None
        self._panel_future = None
        self._moments = None  # per rank: a future of its optimizer moments (local SGD)
        self.bytes_per_sync = 0  # bytes moved per round and worker, both ways

    def _panel(self, panel):
        if self._panel_key != id(panel):  # a loader task keeps lineage, unlike scatter
            with quiet_large_graphs():
                self._panel_future = self.client.submit(_hold, panel, pure=False)
            replicate(self.client, self._panel_future)  # every rank reads it
            self._panel_key = id(panel)
        return self._panel_future

    def _gather(self, futures):
        from distributed import wait

        wait(futures, timeout=RESULT_TIMEOUT_S)
        return self.client.gather(futures)

    def _submit_round(self, model, panel, state, batches, lrs):
        key = (type(model).__name__, json.dumps(model.hyperparameters(), sort_keys=True))
        data = self._panel(panel)
        step = state.optimizer.step
        seeds = [[model.random_seed, step, rank] for rank in range(self.ranks)]
        shares = [np.array_split(starts, self.ranks) for starts in batches]
        if len(batches) == 1:
            return [self.client.submit(_rank_gradient, key, state.params, state.buffers, data,
                                       shares[0][rank], seeds[rank], pure=False)
                    for rank in range(self.ranks)]
        moments = self._moments or [state.optimizer.buffers] * self.ranks
        rounds = [self.client.submit(_rank_local_steps, key, state.params, moments[rank], step,
                                     state.buffers, data, [s[rank] for s in shares], lrs,
                                     seeds[rank], pure=False)
                  for rank in range(self.ranks)]
        self._moments = [self.client.submit(_pick, r, 2, pure=False) for r in rounds]
        return [self.client.submit(_pick, r, i, pure=False) for r in rounds for i in (0, 1, 3)]

    def run(self, model, panel, state, batches, lrs) -> list[float]:
        if model.MULTIVARIATE:  # a window is n_series rows: shares would split windows
            return LocalSteps().run(model, panel, state, batches, lrs)
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        for attempt in range(RETRIES + 1):
            try:
                results = self._gather(self._submit_round(model, panel, state, batches, lrs))
                break
            except TrainingDiverged:  # on a worker: this state is the last synchronized one
                raise diverged(model, state, state.optimizer.step, float("nan")) from None
            except (KilledWorker, CommClosedError, OSError, TimeoutError):
                if attempt == RETRIES:
                    raise
                self._moments = None  # restart the ranks' moments from the driver's
                self.client.wait_for_workers(1, timeout=RESULT_TIMEOUT_S)  # and retry the round
        if len(batches) == 1:
            return [self._apply_gradients(model, state, results, lrs[0])]
        return self._average(model, state, [results[i:i + 3] for i in range(0, len(results), 3)])

    def finish(self, state) -> None:
        """Bring the ranks' optimizer moments back, averaged, into the driver's state."""
        if self._moments is None:
            return
        moments = self._gather(self._moments)
        for name in state.optimizer.buffers:
            state.optimizer.buffers[name][:] = np.mean([m[name] for m in moments], axis=0)
        self._moments = None

    def _apply_gradients(self, model, state, results, lr):
        sizes = np.array([n for _, _, n in results], dtype=np.float64)
        weights = sizes / sizes.sum()
        loss = float(sum(w * r[0] for w, r in zip(weights, results, strict=True)))
        grads = sum(w * r[1] for w, r in zip(weights, results, strict=True)).astype(
            state.params.dtype)
        if not (np.isfinite(loss) and np.isfinite(grads).all()):
            raise diverged(model, state, state.optimizer.step, loss)
        state.optimizer.update(state.params, grads, lr)
        self.bytes_per_sync = 2 * state.params.nbytes
        return loss

    def _average(self, model, state, results):
        """results per rank: (losses, parameters, running statistics)."""
        losses = np.mean([r[0] for r in results], axis=0)
        params = np.mean([r[1] for r in results], axis=0).astype(state.params.dtype)
        if not (np.isfinite(losses).all() and np.isfinite(params).all()):
            raise diverged(model, state, state.optimizer.step, float(losses[-1]))
        state.params[:] = params
        for name in state.buffers:
            state.buffers[name][:] = np.mean([r[2][name] for r in results], axis=0)
        state.optimizer.step += len(losses)
        statistics = sum(v.nbytes for v in state.buffers.values())
        self.bytes_per_sync = 2 * (state.params.nbytes + statistics)
        return [float(v) for v in losses]
