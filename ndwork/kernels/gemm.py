"""Which BLAS runs each float32 matrix product of the compiled kernels.

Candidates: "numpy" (the BLAS numpy links: OpenBLAS in numpy's wheels; always there),
"onednn" (oneDNN's matmul primitive through its C API: the optional onednn-cpu-tbb
wheel, `pip install 'ndwork[onednn]'`) and "mkl" (oneMKL's cblas_sgemm through ctypes:
the optional mkl wheel). `Optimizations(blas="auto")`, the default, gives every GEMM of
at least SMALL multiply-adds to oneDNN when it is installed and may use all the cores;
otherwise it times MKL against numpy's BLAS the first time a (m, k, n, transposes,
threads) runs and keeps numpy's unless MKL's median is 10% faster (interleaved runs: a
shared machine is noisy), in memory and in a JSON file per CPU model and library
versions ($NDWORK_CACHE_DIR, else ~/.cache/ndwork), so later processes and dask workers
on this machine pick the same without measuring. Without either wheel "auto" is numpy's
BLAS, and says once what was not measured.

Why oneDNN takes every GEMM rather than the shapes it wins alone: timed shape by shape,
interleaved with OpenBLAS, it won only the skinny shapes (OpenBLAS's threads spin after
each call and slow whatever runs next), while whole fits on oneDNN ran 1.6x faster than
on OpenBLAS (MLP and NHITS at NeuralForecast's defaults, 2-core AMD EPYC with AVX-512,
where the machine pins OpenBLAS to its AVX2 kernels: 1024^3 at 470-490 GFLOP/s against
250). MKL measured slower than OpenBLAS at every dense-layer shape there.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from ndwork.config import (
    active,
    available_blas,
    cpu,
    mkl_library,
    numpy_blas_single_threaded,
    onednn_library,
)

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


_DNNL_F32, _DNNL_CPU, _DNNL_IN_ORDER = 3, 1, 1
_DNNL_ARG_SRC, _DNNL_ARG_WEIGHTS, _DNNL_ARG_DST = 1, 33, 17


class _DnnlArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class _OneDNN:
    """oneDNN's matmul primitive through its C API: one primitive per shape and operand
    strides (creating one costs far more than running it), per thread (a primitive's
    memory objects and the stream are not shared between threads)."""

    def __init__(self, lib):
        self.lib = lib
        self.engine = ctypes.c_void_p()
        self._ok(lib.dnnl_engine_create(ctypes.byref(self.engine), _DNNL_CPU, 0), "engine")
        self._local = threading.local()

    @staticmethod
    def _ok(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"oneDNN {what} failed with status {status}")

    def _desc(self, shape, strides):
        desc = ctypes.c_void_p()
        dims = (ctypes.c_int64 * 2)(*shape)
        steps = (ctypes.c_int64 * 2)(*(s // 4 for s in strides))
        self._ok(self.lib.dnnl_memory_desc_create_with_strides(
            ctypes.byref(desc), 2, dims, _DNNL_F32, steps), "memory descriptor")
        return desc

    def _primitive(self, a: np.ndarray, b: np.ndarray):
        local = self._local
        if not hasattr(local, "cache"):
            local.cache, local.stream = {}, ctypes.c_void_p()
            self._ok(self.lib.dnnl_stream_create(ctypes.byref(local.stream), self.engine,
                                                 _DNNL_IN_ORDER), "stream")
        key = (a.shape, a.strides, b.shape, b.strides)
        if key not in local.cache:
            m, n = a.shape[0], b.shape[1]
            descs = [self._desc(a.shape, a.strides), self._desc(b.shape, b.strides),
                     self._desc((m, n), (4 * n, 4))]
            pd, primitive = ctypes.c_void_p(), ctypes.c_void_p()
            self._ok(self.lib.dnnl_matmul_primitive_desc_create(
                ctypes.byref(pd), self.engine, descs[0], descs[1], None, descs[2], None),
                "matmul descriptor")
            self._ok(self.lib.dnnl_primitive_create(ctypes.byref(primitive), pd), "matmul")
            memories = []
            for desc in descs:
                memory = ctypes.c_void_p()
                self._ok(self.lib.dnnl_memory_create(ctypes.byref(memory), desc, self.engine,
                                                     None), "memory")
                memories.append(memory)
            args = (_DnnlArg * 3)(*(_DnnlArg(arg, memory) for arg, memory in zip(
                (_DNNL_ARG_SRC, _DNNL_ARG_WEIGHTS, _DNNL_ARG_DST), memories, strict=True)))
            local.cache[key] = (primitive, memories, args)
        return local.cache[key], local.stream

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if min(a.strides + b.strides) <= 0 or a.strides[-1] % 4 or b.strides[-1] % 4:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        (primitive, memories, args), stream = self._primitive(a, b)
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        for memory, array in zip(memories, (a, b, out), strict=True):
            self._ok(self.lib.dnnl_memory_set_data_handle(memory, ctypes.c_void_p(
                array.ctypes.data)), "data handle")
        self._ok(self.lib.dnnl_primitive_execute(primitive, stream, 3, args), "matmul run")
        self._ok(self.lib.dnnl_stream_wait(stream), "stream wait")
        return out


@functools.cache
def _onednn() -> _OneDNN:
    return _OneDNN(onednn_library())


def onednn_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D float32 operands by oneDNN's matmul (any positive strides)."""
    return _onednn().matmul(a, b)


def _numpy_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b


CANDIDATES = {"numpy": _numpy_matmul, "mkl": mkl_matmul, "onednn": onednn_matmul}


# Products under this many multiply-adds, and vector-matrix products (a forecast's GEMVs),
# run on numpy's BLAS directly: there the dispatch would cost more than any BLAS saves.
# Anything bigger must not: a multi-threaded OpenBLAS call in a step leaves its threads
# spinning, which halved oneDNN's speed in the next calls (NHITS 25 -> 13.5 steps/s).
SMALL, FEW_ROWS = 2**20, 2


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b by the BLAS the active `Optimizations.blas` picks for this shape (timed by
    shape into an open `ndwork.profile()`). A stack of matrices times one matrix is one
    2-D product."""
    if a.ndim > 2 and b.ndim == 2:
        return matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[1])
    if profiling.current() is not None:
        return profiling.current().gemm(_label(_key(a, b, active().threads)), _blas_for(a, b),
                                        a, b)
    if a.ndim == 2 and (a.shape[0] < FEW_ROWS or a.shape[0] * a.shape[1] * b.shape[-1] < SMALL):
        return a @ b  # the hot small case
    return _blas_for(a, b)(a, b)


def _blas_for(a: np.ndarray, b: np.ndarray):
    opts = active()
    if opts.blas == "numpy" or a.ndim != 2 or b.ndim != 2 or a.shape[0] < FEW_ROWS \
            or a.shape[0] * a.shape[1] * b.shape[1] < SMALL or a.dtype != np.float32 \
            or b.dtype != np.float32:
        return _numpy_matmul
    name = opts.blas
    if name == "auto":
        if _onednn_usable(opts.threads):
            return onednn_matmul
        if len(available_blas()) == 2:
            _say_others_absent()
            return _numpy_matmul
        name = _CHOICES.pick(a, b, opts.threads)
    return CANDIDATES[name]


def quiet_numpy_blas() -> contextlib.AbstractContextManager:
    """numpy's BLAS on one thread while oneDNN takes the big GEMMs (fit and predict hold
    this): OpenBLAS's threads spin after each threaded call, and the small products left
    to it (a model's bases, batched matmuls) then slowed every oneDNN call after them
    (NBEATS 14 -> 24 steps/s with this)."""
    opts = active()
    if opts.blas == "onednn" or (opts.blas == "auto" and _onednn_usable(opts.threads)):
        return numpy_blas_single_threaded()
    return contextlib.nullcontext()


def _onednn_usable(threads: int | None) -> bool:
    """oneDNN takes every GEMM when it is installed and may use all the cores (its TBB
    runtime takes no thread limit from here, so under a limit it would oversubscribe)."""
    return "onednn" in available_blas() and (threads is None or threads >= (os.cpu_count() or 1))


@functools.cache
def _say_others_absent() -> None:
    _log.info("ndwork: GEMMs run on numpy's BLAS only; the optional oneDNN and mkl wheels "
              "are not installed, so they were not measured against it (pip install "
              "'ndwork[onednn]' or 'ndwork[mkl]').")


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


def _fastest(a: np.ndarray, b: np.ndarray, threads: int | None, rounds: int = 7) -> str:
    """numpy's BLAS unless MKL's median time over `rounds` interleaved runs (so a burst
    of load hits both) is under MARGIN times numpy's."""
    names = [name for name in available_blas()[1:] if name != "onednn"]
    times = {name: [] for name in names}
    for name in names:
        CANDIDATES[name](a, b)  # warm-up: first-call setup, caches
    for _ in range(rounds):
        for name in names:
            start = time.perf_counter()
            CANDIDATES[name](a, b)
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    best = min(medians, key=medians.get)
    return best if medians[best] < MARGIN * medians["numpy"] else "numpy"


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
                choice = self.table().get(label) or _fastest(a, b, threads)
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
