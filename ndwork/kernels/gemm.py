"""Which BLAS runs each float32 matrix product of the compiled kernels, per shape, chosen
by measurement on this CPU.

Candidates: "numpy" (the BLAS numpy links: OpenBLAS in numpy's wheels; always there) and
"mkl" (oneMKL's cblas_sgemm through ctypes, when the optional `mkl` wheel is installed:
pip install 'ndwork[mkl]'). `Optimizations(blas="auto")`, the default, times both the
first time a (m, k, n, transposes, threads) runs and keeps numpy's unless MKL's median is
10% faster (interleaved runs: a shared machine is noisy), in memory and in
a JSON file per CPU model and library versions ($NDWORK_CACHE_DIR, else ~/.cache/ndwork),
so later processes and dask workers on this machine pick the same without measuring.
Without the wheel "auto" is numpy's BLAS, and says once that MKL was not measured.

Measured on a 2-core AMD EPYC (AVX-512): numpy's OpenBLAS runs the dense layers' shapes
at 200-250 GFLOP/s and MKL at 50-200, so "auto" keeps OpenBLAS there; MKL is the
candidate for Intel CPUs. A numba register-tiled GEMM was not added: OpenBLAS already
reaches 85-100% of its own 2048^3 rate at those shapes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time

import numba
import numpy as np

from ndwork import profiling
from ndwork.config import active, cpu, mkl_library

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_log = logging.getLogger("ndwork")


def _operand(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(row-major storage, transpose flag, leading dimension) of a 2-D operand."""
    if x.flags.c_contiguous:
        return x, _NO_TRANS, x.shape[1]
    if x.flags.f_contiguous:
        return x, _TRANS, x.shape[0]
    x = np.ascontiguousarray(x)
    return x, _NO_TRANS, x.shape[1]


def mkl_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D float32 operands by oneMKL (either may be a transposed view)."""
    lib = mkl_library()
    (m, k), n = a.shape, b.shape[1]
    a, trans_a, lda = _operand(a)
    b, trans_b, ldb = _operand(b)
    out = np.empty((m, n), dtype=np.float32)
    lib.MKL_Set_Num_Threads_Local(numba.get_num_threads())
    lib.cblas_sgemm(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda,
                    b.ctypes.data, ldb, 0.0, out.ctypes.data, n)
    return out


def _numpy_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b


CANDIDATES = {"numpy": _numpy_matmul, "mkl": mkl_matmul}


# Products under this many multiply-adds (a forecast's GEMVs: 1 x 512 x 512 is 2^18) run
# on numpy's BLAS directly: there the dispatch would cost more than any BLAS could save.
SMALL = 2**20


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b by the BLAS the active `Optimizations.blas` picks for this shape (timed by
    shape into an open `ndwork.profile()`)."""
    if profiling.current() is not None:
        return profiling.current().gemm(_label(_key(a, b, active().threads)), _blas_for(a, b),
                                        a, b)
    if a.ndim == 2 and a.shape[0] * a.shape[1] * b.shape[-1] < SMALL:  # the hot small case
        return a @ b
    return _blas_for(a, b)(a, b)


def _blas_for(a: np.ndarray, b: np.ndarray):
    opts = active()
    if opts.blas == "numpy" or a.ndim != 2 or b.ndim != 2 \
            or a.shape[0] * a.shape[1] * b.shape[1] < SMALL or a.dtype != np.float32 \
            or b.dtype != np.float32:
        return _numpy_matmul
    name = opts.blas
    if name == "auto":
        if mkl_library() is None:
            _say_mkl_absent()
            return _numpy_matmul
        name = _CHOICES.pick(a, b, opts.threads)
    return CANDIDATES[name]


@functools.cache
def _say_mkl_absent() -> None:
    _log.info("ndwork: GEMMs run on numpy's BLAS only; the optional mkl wheel is not "
              "installed, so MKL was not measured against it (pip install 'ndwork[mkl]').")


def _key(a: np.ndarray, b: np.ndarray, threads: int | None) -> tuple:
    return (a.shape[0], a.shape[1], b.shape[1], a.flags.c_contiguous, b.flags.c_contiguous,
            threads or numba.config.NUMBA_NUM_THREADS)


def _label(key: tuple) -> str:
    """A shape key as the JSON file writes it: "m x k x n, transposes, threads"."""
    m, k, n, a_rows, b_rows, threads = key
    return f"{m}x{k}x{n} {'N' if a_rows else 'T'}{'N' if b_rows else 'T'} threads={threads}"


# MKL must beat numpy's BLAS by this much to be picked: one measurement on a shared
# machine is noisy, and a choice is kept on disk for good
MARGIN = 0.9


def _fastest(a: np.ndarray, b: np.ndarray, rounds: int = 7) -> str:
    """numpy's BLAS unless MKL's median time over `rounds` interleaved runs (so a burst of
    load hits both) is under MARGIN times numpy's."""
    times = {name: [] for name in CANDIDATES}
    for fn in CANDIDATES.values():
        fn(a, b)  # warm-up: first-call setup, caches
    for _ in range(rounds):
        for name, fn in CANDIDATES.items():
            start = time.perf_counter()
            fn(a, b)
            times[name].append(time.perf_counter() - start)
    mkl, numpy = (float(np.median(times[name])) for name in ("mkl", "numpy"))
    return "mkl" if mkl < MARGIN * numpy else "numpy"


class _Choices:
    """The per-shape choices: in memory, backed by one JSON file per machine fingerprint."""

    def __init__(self):
        self._lock = threading.Lock()
        self._table: dict[str, str] | None = None  # as the file has it
        self._by_key: dict[tuple, str] = {}  # the same, keyed for the hot path

    @functools.cached_property
    def path(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            mkl = version("mkl")
        except PackageNotFoundError:
            mkl = None
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        fingerprint = json.dumps([cpu()["model"], np.__version__, mkl, blas.get("name"),
                                  blas.get("version")])
        digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
        root = os.environ.get("NDWORK_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "ndwork")
        return os.path.join(root, f"gemm-{digest}.json")

    def table(self) -> dict[str, str]:
        if self._table is None:
            try:
                with open(self.path) as f:
                    self._table = {k: v for k, v in json.load(f).items() if v in CANDIDATES}
            except (OSError, ValueError):
                self._table = {}
        return self._table

    def pick(self, a: np.ndarray, b: np.ndarray, threads: int | None) -> str:
        key = _key(a, b, threads)
        choice = self._by_key.get(key)
        if choice is None:
            with self._lock:
                label = _label(key)
                choice = self.table().get(label) or _fastest(a, b)
                if label not in self._table:
                    self._table[label] = choice
                    self._save()
                self._by_key[key] = choice
        return choice

    def _save(self) -> None:
        """Merge into the file (another process may have added shapes) atomically."""
        path = self.path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                with open(path) as f:
                    merged = {**json.load(f), **self._table}
            except (OSError, ValueError):
                merged = dict(self._table)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f, indent=0, sort_keys=True)
            os.replace(tmp, path)
        except OSError:  # a read-only home: the choices stay in memory
            pass

    def clear(self) -> None:
        """Forget every choice, in memory and on disk (tests, a changed machine)."""
        with self._lock:
            self._table, self._by_key = {}, {}
            with contextlib.suppress(OSError):
                os.remove(self.path)


_CHOICES = _Choices()


def choices() -> dict[str, str]:
    """The measured choice per shape key ("m x k x n, transposes, threads" -> BLAS)."""
    return dict(_CHOICES.table())


def clear_choices() -> None:
    _CHOICES.clear()
