"""One `parallel=` argument for independent work: serial, threads, or dask workers.

parallel=None runs in this process; "threads" a thread pool with one thread per core
(BLAS and numba pinned to one thread each, so the pool never oversubscribes); True, a number of
workers, a dask.distributed.Client or a scheduler address: dask workers (see
`connect`). Tasks run under the caller's `Optimizations`, in every thread or worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ndwork.config import active, blas_threads, optimizations


def task_switches() -> dict:
    """The caller's switches as a task on a pool thread or a dask worker runs them: on one
    thread, one task per thread (as dask's nanny pins BLAS). A worker's own thread count
    cannot be trusted for this: its NUMBA_NUM_THREADS arrives after a main script that
    imports ndwork has loaded numba, and oneDNN's TBB threads take every core anyway, so
    two workers on two cores each ran on both (batch inference: 2 workers no faster
    than 1)."""
    return active().switches() | {"threads": 1}


def _call(switches: dict, fn: Callable, item):
    with optimizations(**switches):
        return fn(item)


def _hold(value):
    return value


class Serial:
    n_workers = 1

    def share(self, value):
        return value

    def map(self, fn: Callable, items: Sequence) -> list:
        return [fn(item) for item in items]


class Threads(Serial):
    def __init__(self, n_workers: int):
        self.n_workers = n_workers

    def map(self, fn, items):
        switches = task_switches()
        with ThreadPoolExecutor(self.n_workers) as pool:
            return list(pool.map(lambda item: _call(switches, fn, item), items))


class DaskWorkers:
    def __init__(self, client):
        self.client = client
        self.n_workers = max(1, len(client.scheduler_info()["workers"]))

    def share(self, value):
        """The value on every worker, as a task result (lineage: recomputed if lost).
        Replicated, because tasks that need data one worker holds all queue there."""
        with quiet_large_graphs():
            future = self.client.submit(_hold, value, pure=False)
        replicate(self.client, future)
        return future

    def map(self, fn, items):
        switches = task_switches()
        with quiet_large_graphs():
            futures = [self.client.submit(_call, switches, fn, item, pure=False)
                       for item in items]
        return self.client.gather(futures)


def replicate(client, future) -> None:
    """Copy a task result to every worker, best effort: it only saves transfers later,
    and the scheduler's replicate can fail while workers come and go."""
    with contextlib.suppress(ValueError, OSError, TimeoutError):
        client.replicate([future])


@contextlib.contextmanager
def quiet_large_graphs():
    """Data sent inside a task on purpose (so the task can recompute it if a worker dies)
    makes dask warn about large graphs; those warnings say nothing new here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph")
        yield


THREADS_TRAINING = (
    "parallel='threads' for training work (cross-validation with refit, grid search, "
    "ensembles): the autodiff's Python holds the GIL between kernels, so 2 threads measured "
    "1.2-1.5x one thread here against 1.5-1.7x for 2 dask workers (python -m ndwork.bench "
    "parallel); pass parallel=2 (dask workers) for that work, and keep threads for "
    "forecasting many series.")


def _caller_level() -> int:
    """The warnings stacklevel of the first frame outside ndwork (and contextlib), seen
    from the function that calls this."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and (
            frame.f_globals.get("__name__", "").split(".")[0] in ("ndwork", "contextlib")):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def executor(parallel, training: bool = False) -> Iterator[Serial | Threads | DaskWorkers]:
    """`training`: the tasks train models (where threads pay less than dask workers: a
    warning says so once)."""
    if parallel is None or parallel is False:
        yield Serial()
    elif parallel == "threads":
        if training:
            warnings.warn(THREADS_TRAINING, UserWarning, stacklevel=_caller_level())
        with blas_threads(1):  # held across the tasks, which each hold it too
            yield Threads(os.cpu_count() or 1)
    else:
        from ndwork.distributed.cluster import connect

        with connect(parallel) as client:
            yield DaskWorkers(client)


__all__ = ["DaskWorkers", "Serial", "Threads", "executor"]
