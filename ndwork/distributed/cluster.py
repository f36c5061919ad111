"""Getting a dask client: an embedded LocalCluster, a given Client, or an address."""

from __future__ import annotations

import ast
import contextlib
import inspect
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path

CONNECT_TIMEOUT_S = 10
# Measured on the team's 2-core machines (shared/dask/NOTES.md): a numpy step ran 2-5x
# slower in a default worker because of the worker's statistical profiler and the
# allocator settings the nanny sets; the nanny pins BLAS threads but not numba's.
# Thread counts go in the workers' own environment. The allocator setting must precede
# the worker process, so it goes in the nanny's pre-spawn environment, which the nanny
# also writes into this process's os.environ: nothing else may go there (a
# NUMBA_NUM_THREADS=1 leaking here would reach numba when it next reloads its config).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}
PRE_SPAWN_ENV = {"MALLOC_MMAP_THRESHOLD_": "16777216"}


@contextlib.contextmanager
def connect(distributed, timeout: float = CONNECT_TIMEOUT_S) -> Iterator:
    """Yield a dask Client for `distributed`:

    True: a LocalCluster with one single-threaded worker process per core;
    an int n: n such workers; a `dask.distributed.Client`: that client, left open;
    a string: the scheduler at that address (error within `timeout` seconds if
    unreachable). Clusters and clients made here are closed on exit.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError("distributed training needs the `dask` extra: "
                          "pip install 'ndwork[dask]'.") from e
    if isinstance(distributed, Client):
        _check_workers(distributed, timeout)
        yield distributed
        return
    if isinstance(distributed, str):
        try:
            client = Client(distributed, timeout=f"{timeout}s", direct_to_workers=True)
        except (OSError, TimeoutError) as e:
            raise ConnectionError(f"cannot reach a dask scheduler at {distributed!r} within "
                                  f"{timeout:g} s: {e}. Check the address and that "
                                  f"`dask scheduler` runs there.") from None
        with client:
            _check_workers(client, timeout)
            yield client
        return
    if distributed is True:
        n_workers = os.cpu_count() or 1
    elif isinstance(distributed, int) and not isinstance(distributed, bool) and distributed > 0:
        n_workers = distributed
    else:
        raise ValueError(f"distributed={distributed!r}: use True, a number of workers, a "
                         f"dask.distributed.Client or a scheduler address.")
    _check_main_guard()
    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **PRE_SPAWN_ENV}
    config = {"distributed.worker.profile.enabled": False,
              "distributed.nanny.pre-spawn-environ": pre_spawn}
    with dask.config.set(config), LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=_dashboard_address(), env=WORKER_ENV) as cluster, \
            Client(cluster) as client:
        yield client


def _dashboard_address():
    """A free port for the dashboard when bokeh is installed, else none."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    return "127.0.0.1:0"


def _check_workers(client, timeout: float) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ValueError(f"the dask client at {client.scheduler.address} has no workers "
                         f"(waited {timeout:g} s); start some with `dask worker ADDRESS`.") \
            from None


MAIN_GUARD = ("fit(distributed=...) starts dask worker processes, which import your script "
              "again: put the code that trains under `if __name__ == \"__main__\":` (see "
              "the README's dask section), or pass the address of a running scheduler.")


def _check_main_guard() -> None:
    """Starting worker processes from a script's top level without the __main__ guard
    makes every worker run the script again (multiprocessing's spawn), which dies deep
    inside multiprocessing. Say so before starting any process."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(MAIN_GUARD)  # a worker re-running an unguarded script
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    frame = inspect.currentframe()
    while frame is not None and not (frame.f_code.co_name == "<module>"
                                     and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None or not path or not os.path.isfile(path):
        return  # a notebook, the REPL, or not called from the script's top level
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    if not any(isinstance(node, ast.If) and _is_main_test(node.test)
               and node.lineno <= line <= node.end_lineno for node in ast.walk(tree)):
        raise RuntimeError(MAIN_GUARD)


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
