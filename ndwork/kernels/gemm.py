"""Which BLAS runs each float32 matrix product of the compiled kernels.

Candidates: "numpy" (the BLAS numpy links: OpenBLAS in numpy's wheels; always there),
"onednn" (oneDNN's matmul primitive through its C API: the optional onednn-cpu-tbb
wheel, `pip install 'ndwork[onednn]'`) and "mkl" (oneMKL's cblas_sgemm through ctypes:
the optional mkl wheel). `Optimizations(blas="auto")`, the default, gives every GEMM of
at least SMALL multiply-adds to oneDNN when it is installed and may use all the cores,
or to MKL where MKL is installed too and measured faster at that shape; otherwise it
times MKL against numpy's BLAS. Each choice is measured the first time a (m, k, n,
transposes, threads) runs, keeps the default (oneDNN, else numpy's) unless the other's
median is 10% faster (interleaved runs: a shared machine is noisy), and is kept in
memory and in a JSON file per CPU model and library versions ($NDWORK_CACHE_DIR, else
~/.cache/ndwork), so later processes and dask workers on this machine pick the same
without measuring. Without either wheel "auto" is numpy's BLAS, and says once what was
not measured.

Why numpy's BLAS is not a candidate beside oneDNN: timed shape by shape, interleaved
with OpenBLAS, oneDNN won only the skinny shapes (OpenBLAS's threads spin after each
call and slow whatever runs next), while whole fits on oneDNN ran 1.6x faster than on
OpenBLAS (MLP and NHITS at NeuralForecast's defaults, 2-core AMD EPYC with AVX-512,
where the machine pins OpenBLAS to its AVX2 kernels: 1024^3 at 470-490 GFLOP/s against
250). MKL runs on the same TBB workers as oneDNN, so they can share a step: on a
2-core AVX2 EPYC MKL took the weight gradients with more batch rows than outputs
(512x1024x512 TN: 4.3 ms against oneDNN's 7.1; NHITS's fit 5.9 -> 6.5 steps/s).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator

import numba
import numpy as np

from ndwork import profiling
from ndwork.config import (
    Optimizations,
    active,
    available_blas,
    cpu,
    mkl_library,
    numpy_blas_single_threaded,
    onednn_library,
)
from ndwork.kernels.precision import BF16, FP16, NAMES, matmul_bf16_weights, to_low, widen

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


def mkl_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b in float32 for two float32, two bfloat16 or two float16 2-D operands (either
    may be a transposed view) by oneMKL: cblas_sgemm, cblas_gemm_bf16bf16f32 or
    cblas_gemm_f16f16f32. The low-precision two are measured by `bench precision` and
    not dispatched to: slower than MKL's own float32 GEMM on the AMD EPYC measured."""
    lib = mkl_library()
    (m, k), n = a.shape, b.shape[1]
    a, trans_a, lda = _operand(a)
    b, trans_b, ldb = _operand(b)
    if out is None:
        out = np.empty((m, n), dtype=np.float32)
    elif out.shape != (m, n) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(m, n)}, "
                         f"got {out.dtype} {out.shape}")
    gemm = {BF16: lib.cblas_gemm_bf16bf16f32, FP16: lib.cblas_gemm_f16f16f32}.get(
        a.dtype, lib.cblas_sgemm)
    lib.MKL_Set_Num_Threads_Local(numba.get_num_threads())
    gemm(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
         0.0, out.ctypes.data, n)
    return out


_DNNL_CPU, _DNNL_IN_ORDER = 1, 1
_DNNL_TYPES = {np.dtype(np.float32): 3, BF16: 2, FP16: 1}
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

    def _desc(self, shape, strides, dtype):
        desc = ctypes.c_void_p()
        dims = (ctypes.c_int64 * 2)(*shape)
        steps = (ctypes.c_int64 * 2)(*(s // dtype.itemsize for s in strides))
        self._ok(self.lib.dnnl_memory_desc_create_with_strides(
            ctypes.byref(desc), 2, dims, _DNNL_TYPES[dtype], steps), "memory descriptor")
        return desc

    def _primitive(self, a: np.ndarray, b: np.ndarray):
        local = self._local
        if not hasattr(local, "cache"):
            local.cache, local.stream = {}, ctypes.c_void_p()
            self._ok(self.lib.dnnl_stream_create(ctypes.byref(local.stream), self.engine,
                                                 _DNNL_IN_ORDER), "stream")
        key = (a.shape, a.strides, a.dtype, b.shape, b.strides, b.dtype)
        if key not in local.cache:
            m, n = a.shape[0], b.shape[1]
            f32 = np.dtype(np.float32)
            descs = [self._desc(a.shape, a.strides, a.dtype),
                     self._desc(b.shape, b.strides, b.dtype), self._desc((m, n), (4 * n, 4), f32)]
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

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if min(a.strides + b.strides) <= 0 or a.strides[-1] % a.itemsize \
                or b.strides[-1] % b.itemsize:
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        (primitive, memories, args), stream = self._primitive(a, b)
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        elif out.shape != (a.shape[0], b.shape[1]) or out.dtype != np.float32 \
                or not out.flags.c_contiguous:  # oneDNN would write past it
            raise ValueError(f"out must be a C-contiguous float32 array of shape "
                             f"{(a.shape[0], b.shape[1])}, got {out.dtype} {out.shape}")
        for memory, array in zip(memories, (a, b, out), strict=True):
            self._ok(self.lib.dnnl_memory_set_data_handle(memory, ctypes.c_void_p(
                array.ctypes.data)), "data handle")
        self._ok(self.lib.dnnl_primitive_execute(primitive, stream, 3, args), "matmul run")
        self._ok(self.lib.dnnl_stream_wait(stream), "stream wait")
        return out


@functools.cache
def _onednn() -> _OneDNN:
    return _OneDNN(onednn_library())


def onednn_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b for 2-D float32 operands by oneDNN's matmul (any positive strides); out: a
    C-contiguous float32 array to write it to."""
    return _onednn().matmul(a, b, out)


def _numpy_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:  # an outer product: numpy's matmul takes a slow
        return np.multiply(a, b, out=out)  # non-BLAS loop for it (3x a broadcast multiply)
    return np.matmul(a, b, out=out)


CANDIDATES = {"numpy": _numpy_matmul, "mkl": mkl_matmul, "onednn": onednn_matmul}
_BLAS_NAMES = {fn: name for name, fn in CANDIDATES.items()}


# Products under this many multiply-adds, and vector-matrix products (a forecast's GEMVs),
# run on numpy's BLAS directly: there the dispatch would cost more than any BLAS saves.
# Anything bigger must not: a multi-threaded OpenBLAS call in a step leaves its threads
# spinning, which halved oneDNN's speed in the next calls (NHITS 25 -> 13.5 steps/s).
SMALL, FEW_ROWS = 2**20, 2
# A forecast's products have a few rows (windows x steps) and stream the weights: there
# numpy's BLAS on the calling thread beats waking oneDNN's threads (one-series predict
# GRU 1.76 -> 1.61 ms, DilatedRNN 2.69 -> 2.40, LSTM 0.96 -> 0.85 on a 2-core AVX2 EPYC).
FORECAST_ROWS = 128
_few_rows = contextvars.ContextVar("few_rows", default=FEW_ROWS)


@contextlib.contextmanager
def forecast_products() -> Iterator[None]:
    """Within, products of fewer than FORECAST_ROWS rows run on numpy's BLAS (a forecast's)."""
    token = _few_rows.set(FORECAST_ROWS)
    try:
        yield
    finally:
        _few_rows.reset(token)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b by the BLAS the active `Optimizations.blas` picks for this shape (timed by
    shape into an open `ndwork.profile()`). A stack of matrices times one matrix is one
    2-D product. Operands in bfloat16 or float16 give a float32 product (see low_matmul).
    out: a C-contiguous float32 array for a 2-D product of float32 operands."""
    if a.ndim > 2 and b.ndim == 2:
        return matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[1])
    if a.itemsize == 2 or b.itemsize == 2:
        return low_matmul(a, b)
    if profiling.current() is not None:
        fn = _blas_for(a, b)
        return profiling.current().gemm(_label(_key(a, b, active().threads)), fn, a, b, out,
                                        _BLAS_NAMES.get(fn, fn.__name__))
    if a.ndim == 2 and (a.shape[0] < _few_rows.get()
                        or a.shape[0] * a.shape[1] * b.shape[-1] < SMALL):
        return _numpy_matmul(a, b, out)  # the hot small case
    return _blas_for(a, b)(a, b, out)


def low_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in float32 for operands in a low precision (bfloat16 or float16, both the
    same): oneDNN's low-precision matmul, accumulating in float32, where this CPU runs it
    natively; else the float32 GEMM of the widened operands (the same values: widening
    is exact; only the speed-up is lost, which native_low_precision says once). A small
    product with bfloat16 weights (a forecast's) reads them as they are, at half the
    bytes."""
    small = a.ndim != 2 or b.ndim != 2 or a.shape[0] < FEW_ROWS \
        or a.shape[0] * a.shape[1] * b.shape[1] < SMALL
    if small and b.dtype == BF16 and a.ndim == 2 and b.ndim == 2:  # a forecast's weights
        return matmul_bf16_weights(widen(a), b)
    if not small and b.dtype == BF16 and native_low_precision(BF16, active().threads):
        a = to_low(a, BF16)  # a batch forecast's float32 activations
    if not small and a.dtype == b.dtype and native_low_precision(a.dtype, active().threads):
        if profiling.current() is not None:
            key = _key(a, b, active().threads)
            return profiling.current().gemm(f"{_label(key)} {a.dtype}", onednn_matmul, a, b,
                                            blas="onednn")
        return onednn_matmul(a, b)
    return matmul(widen(a), widen(b))


class PrecisionFallbackWarning(UserWarning):
    """Low-precision GEMMs run in float32 here (the stored precision and the results'
    values are kept; the speed-up is lost). Silence it with
    warnings.filterwarnings("ignore", category=ndwork.PrecisionFallbackWarning)."""


_NATIVE_ISA = {BF16: ("avx512_bf16", "amx_bf16"), FP16: ("avx512_fp16", "amx_fp16")}


def native_low_precision(dtype: np.dtype, threads: int | None = None) -> bool:
    """Whether GEMMs on `dtype` operands run natively here (see _native_reason); warns
    once (PrecisionFallbackWarning) when they do not."""
    why = _native_reason(dtype, threads)
    if why is not None:
        _warn_fallback(NAMES[dtype], why)
    return why is None


@functools.cache
def _warn_fallback(name: str, why: str) -> None:
    warnings.warn(f"ndwork: precision={name!r} keeps weights' copies and activations in "
                  f"{name}, but its GEMMs run in float32 here: {why}. Same values, no "
                  f"speed-up. Silence with warnings.filterwarnings('ignore', "
                  f"category=ndwork.PrecisionFallbackWarning).",
                  PrecisionFallbackWarning, stacklevel=4)


@functools.cache
def _native_reason(dtype: np.dtype, threads: int | None) -> str | None:
    """Why GEMMs on `dtype` operands cannot run natively here, or None when they can:
    oneDNN installed and free to use all the cores, the CPU's low-precision dot
    products, and a primitive that oneDNN builds for them."""
    name = NAMES[dtype]
    isa = [flag for flag in _NATIVE_ISA[dtype] if flag in cpu()["isa"]]
    if "onednn" not in available_blas():
        return "the optional oneDNN wheel is not installed (pip install 'ndwork[onednn]')"
    if not isa:
        return f"this CPU ({cpu()['model']}) has none of {', '.join(_NATIVE_ISA[dtype])}"
    if not _onednn_usable(threads):
        return (f"oneDNN cannot be limited to threads={threads} (run with threads=None to "
                f"use every core)")
    try:
        probe = np.ones((2, 2), dtype)
        onednn_matmul(probe, probe)
    except RuntimeError as error:
        return f"oneDNN has no {name} matmul for this CPU ({error})"
    return None


def _blas_for(a: np.ndarray, b: np.ndarray):
    opts = active()
    if opts.blas == "numpy" or a.ndim != 2 or b.ndim != 2 or a.shape[0] < _few_rows.get() \
            or a.shape[0] * a.shape[1] * b.shape[1] < SMALL or a.dtype != np.float32 \
            or b.dtype != np.float32:
        return _numpy_matmul
    name = opts.blas
    if name == "auto":
        if _onednn_usable(opts.threads):
            if "mkl" not in available_blas():
                return onednn_matmul
            return CANDIDATES[_TBB_CHOICES.choose(_key(a, b, opts.threads),
                                                  lambda: _fastest(a, b, "onednn"))]
        if len(available_blas()) == 2:
            _say_others_absent()
            return _numpy_matmul
        name = _CHOICES.choose(_key(a, b, opts.threads), lambda: _fastest(a, b))
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


_CORES = os.cpu_count() or 1  # (asked once: os.cpu_count costs ~10 us, per GEMM here)


def _onednn_usable(threads: int | None) -> bool:
    """oneDNN takes every GEMM when it is installed and may use all the cores (its TBB
    runtime takes no thread limit from here, so under a limit it would oversubscribe)."""
    return "onednn" in available_blas() and (threads is None or threads >= _CORES)


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


def _fastest(a: np.ndarray, b: np.ndarray, default: str = "numpy") -> str:
    """`default` (numpy's BLAS, or oneDNN) unless MKL's median time is under MARGIN times
    its. oneDNN is measured only against MKL: both run on the same TBB workers, so
    neither leaves threads spinning against the other, as OpenBLAS's would."""
    names = [name for name in (default, "mkl") if name in available_blas()]
    return _fastest_of({name: functools.partial(CANDIDATES[name], a, b) for name in names},
                       rounds=7, default=default)


class _Choices:
    """Measured choices by shape: in memory, backed by one JSON file per machine
    fingerprint and kind ("gemm": the BLAS per shape, "precision": float32 or a low
    precision per dense layer)."""

    def __init__(self, kind: str, allowed: tuple[str, ...]):
        self.kind, self.allowed = kind, allowed
        self._lock = threading.Lock()
        self._table: dict[str, str] | None = None  # as the file has it
        self._by_key: dict[tuple, str] = {}  # the same, keyed for the hot path

    @functools.cached_property
    def path(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name):
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        fingerprint = json.dumps([cpu()["model"], np.__version__, installed("mkl"),
                                  blas.get("name"), blas.get("version")]
                                 + ([installed("onednn-cpu-tbb")] if self.kind != "gemm" else []))
        digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:12]
        root = os.environ.get("NDWORK_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "ndwork")
        return os.path.join(root, f"{self.kind}-{digest}.json")

    def table(self) -> dict[str, str]:
        if self._table is None:
            try:
                with open(self.path) as f:
                    self._table = {k: v for k, v in json.load(f).items()
                                   if str(v).split()[0] in self.allowed}
            except (OSError, ValueError):
                self._table = {}
        return self._table

    def choose(self, key: tuple, measure) -> str:
        """The choice for `key`: remembered, else `measure()`'s, then remembered."""
        choice = self._by_key.get(key)
        if choice is None:
            with self._lock:
                label = _label(key)
                choice = self.table().get(label) or measure()
                if label not in self._table:
                    self._table[label] = choice
                    self._save()
                    _log.info("ndwork: %s for %s: %s (measured)", self.kind, label, choice)
                self._by_key[key] = choice = choice.split()[0]  # "bf16 (1.9x fp32)": bf16
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


_CHOICES = _Choices("gemm", tuple(CANDIDATES))
_TBB_CHOICES = _Choices("gemm-tbb", ("onednn", "mkl"))  # its file names oneDNN's version
_PRECISION_CHOICES = _Choices("precision", ("fp32", "bf16", "fp16"))


def low_precision_pays(m: int, k: int, n: int, dtype: np.dtype) -> bool:
    """Whether a dense layer (m rows, k inputs, n outputs) trains faster with its GEMMs
    in `dtype` than in float32 here ("auto" precision): its forward and both backward
    GEMMs, conversions included, timed once per shape and machine and kept with the
    BLAS choices. False, unmeasured, where the low-precision GEMM is not native."""
    threads = active().threads
    if m < FEW_ROWS or m * k * n < SMALL or _native_reason(dtype, threads) is not None:
        return False
    name = NAMES[dtype]
    key = (m, k, n, True, True, threads or numba.config.NUMBA_NUM_THREADS)
    return _PRECISION_CHOICES.choose(key, lambda: _faster_precision(m, k, n, dtype)) == name


def precision_summary(precision: str, threads: int | None = None) -> str:
    """One line on what a precision does here: its GEMMs native or float32 (and why),
    and for "auto" each measured layer shape's choice and factor."""
    if precision in ("fp32", "fp64"):
        return f"{precision}: every array and GEMM in {precision}"
    dtype = Optimizations(precision=precision).dtypes.low
    why = _native_reason(dtype, threads)
    name = NAMES[dtype]
    gemms = f"{name} GEMMs native (oneDNN)" if why is None else f"{name} GEMMs in float32: {why}"
    if precision != "auto":
        return f"{precision}: float32 master weights, activations in {name}, {gemms}"
    picked = "; ".join(f"{k}: {v}" for k, v in precision_choices().items()) or \
        "no layer measured yet"
    return f"auto: {gemms}; per layer shape, measured: {picked}"


def _faster_precision(m: int, k: int, n: int, dtype: np.dtype, rounds: int = 7) -> str:
    """The faster precision of a dense layer's three GEMMs, with the measured factor:
    "bf16 (1.93x fp32)" or "fp32 (bf16 0.95x)"."""
    rng = np.random.default_rng(0)
    x, w, dz = (rng.standard_normal(shape, dtype=np.float32) for shape in
                ((m, k), (k, n), (m, n)))

    def layer(x, w, dz):
        return matmul(x, w), matmul(x.T, dz), matmul(dz, w.T)

    name = NAMES[dtype]
    runs = {"fp32": lambda: layer(x, w, dz),
            name: lambda: layer(to_low(x, dtype), to_low(w, dtype), to_low(dz, dtype))}
    medians = {}
    choice = _fastest_of(runs, rounds, default="fp32", medians=medians)
    factor = medians["fp32"] / medians[name]
    return f"{name} ({factor:.2f}x fp32)" if choice == name else f"fp32 ({name} {factor:.2f}x)"


def _fastest_of(runs: dict, rounds: int, default: str, medians: dict | None = None) -> str:
    """`default` unless another run's median over `rounds` interleaved rounds (a burst of
    load hits all of them) is under MARGIN times its (the medians go into `medians`)."""
    times = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up: first-call setup, caches
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {} if medians is None else medians
    medians.update({name: float(np.median(t)) for name, t in times.items()})
    best = min(medians, key=medians.get)
    return best if medians[best] < MARGIN * medians[default] else default


def choices() -> dict[str, str]:
    """The measured BLAS per shape key ("m x k x n, transposes, threads" -> BLAS): between
    oneDNN and MKL where "auto" may give oneDNN the cores, else between numpy's and MKL."""
    return {**_CHOICES.table(), **_TBB_CHOICES.table()}


def precision_choices() -> dict[str, str]:
    """The measured precision per dense-layer shape, with its factor ("1024x96x1024 NN
    threads=2" -> "bf16 (1.93x fp32)")."""
    return dict(_PRECISION_CHOICES.table())


def clear_choices() -> None:
    _CHOICES.clear()
    _TBB_CHOICES.clear()
    _PRECISION_CHOICES.clear()
