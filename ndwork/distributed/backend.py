"""The dask backend of the training loop: a round of `sync_every` steps on workers.

sync_every=1: each step's global batch is split into one share per logical rank;
every rank returns the mean loss and gradient of its share and its updated running
statistics; the driver averages them (weighted by share size, so the gradient is
exactly that of the global batch) and applies the optimizer: the trajectory equals
single-process training for every model without batch statistics (BatchNorm
normalizes each rank's share by the share's own statistics, as PyTorch's DDP without
SyncBatchNorm; the running statistics are averaged).
sync_every=K>1 (local SGD): every rank runs K optimizer steps on its shares of the K
global batches from the last averaged parameters, with its own optimizer moments, which
stay on its worker between rounds (a future handed to the next round's task), so a
synchronization moves the parameters once each way; the driver averages parameters and
running statistics once per round, and the ranks' moments when training ends.

Ranks are logical and fixed (batches and dropout masks depend on seed, step and a
window's place in the global batch, never on which worker is alive); tasks hold no
state, and the data is a task result with lineage, so dask recomputes whatever a dead
worker held and retries its tasks. Each task runs under the driver's Optimizations.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json

import numpy as np

from ndwork.autodiff.noise import TrainingNoise
from ndwork.config import active, optimizations
from ndwork.distributed.pool import _hold, quiet_large_graphs, replicate, task_switches
from ndwork.training.trainer import (
    LocalSteps,
    TrainingDiverged,
    apply_step,
    batch_positions,
    diverged,
    finite,
    initial_state,
    loss_scale,
)

RESULT_TIMEOUT_S = 600
RETRIES = 3


@dataclasses.dataclass
class RankGradient:
    """One rank's share of a synchronous step."""

    loss: float
    grads: np.ndarray
    windows: int
    targets: float  # target points the loss averages over (those past a series' end are not)
    buffers: dict  # running statistics after the share's training forward
    switches: dict  # the Optimizations the worker ran under


@dataclasses.dataclass
class RankSteps:
    """One rank's K local steps (local SGD)."""

    losses: list[float]
    params: np.ndarray
    moments: dict  # optimizer buffers: stay on the worker for the next round
    buffers: dict
    windows: int
    switches: dict
    skipped: int  # the rank's optimizer's skipped steps (fp16 loss scaling), in all
    loss_scaler: object  # the rank's LossScaler after its steps, or None


@functools.lru_cache(maxsize=8)
def _model(class_name: str, hyperparameters: str):
    """The model rebuilt on a worker, once per worker and configuration."""
    from ndwork.models import model_class

    return model_class(class_name)(**json.loads(hyperparameters))


def _rank_gradient(model_key, switches, params, buffers, panel, starts, positions, step,
                   scale):
    """Mean loss and gradient of one rank's share of a global batch (the backward on the
    loss times `scale`: fp16's loss scaling)."""
    from ndwork.training.trainer import loss_and_grad, make_batch

    model = _model(*model_key)
    buffers = {k: v.copy() for k, v in buffers.items()}
    with optimizations(**switches), np.errstate(over="ignore", invalid="ignore"):
        batch = make_batch(model, panel, starts)
        loss, grads = loss_and_grad(model, params, batch,
                                    TrainingNoise(model.random_seed, step, positions), buffers,
                                    scale)
        return RankGradient(loss, grads, len(positions), float(batch["outsample_mask"].sum()),
                            buffers, active().switches())


def _rank_local_steps(model_key, switches, params, moments, step, skipped, loss_scaler,
                      buffers, panel, batches, positions, lrs):
    """K optimizer steps of one rank from the last averaged state (local SGD)."""
    model = _model(*model_key)
    state = initial_state(model)
    state.params, state.buffers = params.copy(), {k: v.copy() for k, v in buffers.items()}
    state.optimizer.buffers = {k: v.copy() for k, v in moments.items()}
    state.optimizer.step, state.optimizer.skipped = step, skipped
    state.loss_scaler = copy.deepcopy(loss_scaler)
    with optimizations(**switches):
        losses = LocalSteps().run(model, panel, state, batches, lrs, positions)
        return RankSteps(losses, state.params, state.optimizer.buffers, state.buffers,
                         len(positions[0]), active().switches(), state.optimizer.skipped,
                         state.loss_scaler)


def _moments(result: RankSteps) -> dict:
    return result.moments


def _weighted_mean(arrays, weights, dtype):
    return sum(w * a for w, a in zip(weights, arrays, strict=True)).astype(dtype)


def _averaged_buffers(state, results, weights) -> dict:
    return {name: _weighted_mean([r.buffers[name] for r in results], weights, value.dtype)
            for name, value in state.buffers.items()}


def _shares(model, starts: np.ndarray, ranks: int) -> list[np.ndarray]:
    """A step's windows, one share of whole windows per rank, as batch_positions splits
    them: a multivariate window is n_series consecutive rows, so each rank holds all
    series of its windows (the work splits by windows in time)."""
    rows = model.n_series if model.MULTIVARIATE else 1
    windows = starts.reshape(-1, rows, *starts.shape[1:])
    return [share.reshape(-1, *starts.shape[1:]) for share in np.array_split(windows, ranks)]


class DaskSteps:
    """Runs rounds of training steps on a dask client with `ranks` logical ranks."""

    def __init__(self, client, ranks: int | None = None):
        self.client = client
        self.ranks = ranks or max(1, len(client.scheduler_info()["workers"]))
        self._panel_key = None
        self._panel_future = None
        self._moments = None  # per rank: a future of its optimizer moments (local SGD)
        self.bytes_per_sync = 0  # bytes moved per round and worker, both ways
        self.worker_switches: dict | None = None  # what the workers last ran under

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
        switches = task_switches()
        data = self._panel(panel)
        step = state.optimizer.step
        shares = [_shares(model, starts, self.ranks) for starts in batches]
        positions = [np.array_split(batch_positions(model, starts), self.ranks)
                     for starts in batches]
        if len(batches) == 1:
            return [self.client.submit(_rank_gradient, key, switches, state.params,
                                       state.buffers, data, shares[0][rank], positions[0][rank],
                                       step, loss_scale(state), pure=False)
                    for rank in range(self.ranks)]
        moments = self._moments or [state.optimizer.buffers] * self.ranks
        rounds = [self.client.submit(_rank_local_steps, key, switches, state.params,
                                     moments[rank], step, state.optimizer.skipped,
                                     state.loss_scaler, state.buffers, data,
                                     [s[rank] for s in shares], [p[rank] for p in positions],
                                     lrs, pure=False)
                  for rank in range(self.ranks)]
        self._moments = [self.client.submit(_moments, r, pure=False) for r in rounds]
        return rounds

    def run(self, model, panel, state, batches, lrs) -> list[float]:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        for attempt in range(RETRIES + 1):
            try:
                with quiet_large_graphs():  # the parameters ride in the tasks, on purpose
                    futures = self._submit_round(model, panel, state, batches, lrs)
                results = self._gather(futures)
                break
            except TrainingDiverged:  # on a worker: this state is the last synchronized one
                raise diverged(model, state, state.optimizer.step, float("nan")) from None
            except (KilledWorker, CommClosedError, OSError, TimeoutError):
                if attempt == RETRIES:
                    raise
                self._moments = None  # restart the ranks' moments from the driver's
                self.client.wait_for_workers(1, timeout=RESULT_TIMEOUT_S)  # and retry the round
        self.worker_switches = results[0].switches
        if len(batches) == 1:
            return [self._apply_gradients(model, state, results, lrs[0])]
        return self._average(model, state, results)

    def finish(self, state) -> None:
        """Bring the ranks' optimizer moments back, averaged, into the driver's state."""
        if self._moments is None:
            return
        moments = self._gather(self._moments)
        for name in state.optimizer.buffers:
            state.optimizer.buffers[name][:] = np.mean([m[name] for m in moments], axis=0)
        self._moments = None

    def _apply_gradients(self, model, state, results: list[RankGradient], lr):
        # each share's loss is a mean over its target points: weighted by them, the
        # average is the loss (and gradient) of the whole batch
        targets = np.array([r.targets for r in results], dtype=np.float64)
        weights = targets / targets.sum()
        loss = float(sum(w * r.loss for w, r in zip(weights, results, strict=True)))
        grads = _weighted_mean([r.grads for r in results], weights, state.params.dtype)
        sizes = np.array([r.windows for r in results], dtype=np.float64)
        buffers = _averaged_buffers(state, results, sizes / sizes.sum())
        apply_step(model, state, loss, grads, buffers, lr)
        statistics = sum(v.nbytes for v in state.buffers.values())
        self.bytes_per_sync = 2 * (state.params.nbytes + statistics)
        return loss

    def _average(self, model, state, results: list[RankSteps]):
        sizes = np.array([r.windows for r in results], dtype=np.float64)
        weights = sizes / sizes.sum()
        losses = _weighted_mean([np.asarray(r.losses) for r in results], weights, np.float64)
        params = _weighted_mean([r.params for r in results], weights, state.params.dtype)
        buffers = _averaged_buffers(state, results, weights)
        if not (np.isfinite(losses).all() and np.isfinite(params).all() and finite(buffers)):
            raise diverged(model, state, state.optimizer.step, float(losses[-1]))
        state.params[:] = params
        state.buffers = buffers
        state.optimizer.step += len(losses)
        # ranks skip steps on their own: the most cautious one's scaler and count go on
        state.optimizer.skipped = max(r.skipped for r in results)
        if state.loss_scaler is not None:
            state.loss_scaler = min((r.loss_scaler for r in results), key=lambda s: s.scale)
        statistics = sum(v.nbytes for v in state.buffers.values())
        self.bytes_per_sync = 2 * (state.params.nbytes + statistics)
        return [float(v) for v in losses]
