"""The one place that decides how ndwork runs: `Optimizations` and the active configuration.

Every switch of the four optimizations lives here. Kernels, ops and models ask
`active()` which implementation to use; nothing else reads environment variables
or globals to decide. The process-wide resources behind the switches live here too:
numba's threading layer and the BLAS thread limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np

KERNELS = ("numba", "numpy")
ATTENTION = ("flash", "naive")
PRECISIONS = ("fp32", "bf16", "fp16", "auto", "fp64")
BLAS = ("auto", "numpy", "mkl", "onednn")


def _select_threading_layer() -> None:
    """Make numba's threading layer one that is safe for parallel kernels launched from
    several threads at once (tbb, else OpenMP), on any image.

    numba's default tries tbb, omp, then workqueue, which aborts the process on
    concurrent launches. The `tbb` wheel (a dependency) puts libtbb in the
    environment's lib folder, which the loader does not search, so it is loaded here
    first. A layer the user chose (NUMBA_THREADING_LAYER) is left alone.
    """
    if numba.config.THREADING_LAYER != "default":
        return
    library = os.path.join(sys.prefix, "lib", "libtbb.so.12")
    if os.path.exists(library):
        with contextlib.suppress(OSError):
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    numba.config.THREADING_LAYER = "threadsafe"


_select_threading_layer()


@functools.cache
def keep_freed_memory_for_reuse() -> None:
    """Let the next training step reuse the memory the last one freed (glibc's malloc);
    once per process, when it first trains (a process that imports ndwork and never
    trains keeps glibc's defaults).

    A step allocates and frees the same large arrays every time. glibc's defaults hand
    them back to the OS (arrays over its adaptive mmap threshold, and the heap's top past
    its trim threshold), so every step paid for them again in page faults: 4,300 a step
    and a fifth of the wall time for the default MLP at 1,024 windows. Arrays up to
    64 MiB now come from the heap and up to 128 MiB of freed heap stays mapped (the
    process's RSS may stay that much above what it uses). MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ set in the environment win; other C libraries are left alone.
    """
    if not sys.platform.startswith("linux") or any(
            f"MALLOC_{name}_" in os.environ for name in ("MMAP_THRESHOLD", "TRIM_THRESHOLD")):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 64 * 2**20)
    mallopt(m_trim_threshold, 128 * 2**20)


@functools.cache
def _mkl_path() -> str | None:
    """Where the optional mkl wheel (or conda's mkl) put oneMKL's runtime library."""
    import glob

    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return found[0] if found else None


@functools.cache
def mkl_library():
    """oneMKL's runtime library with its float32, bf16 and fp16 GEMMs typed (loaded at
    first use), or None.

    Its threads run on TBB (numba's layer here too), not on a second OpenMP pool."""
    if _mkl_path() is None:
        return None
    os.environ.setdefault("MKL_THREADING_LAYER", "TBB")
    try:
        lib = ctypes.CDLL(_mkl_path())
    except OSError:
        return None
    for name in ("cblas_sgemm", "cblas_gemm_bf16bf16f32", "cblas_gemm_f16f16f32"):
        function = getattr(lib, name)
        function.restype = None
        function.argtypes = [ctypes.c_int] * 6 + [
            ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
            ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
    return lib


@functools.cache
def _onednn_installed() -> bool:
    return os.path.exists(os.path.join(sys.prefix, "lib", "libdnnl.so.3"))


@functools.cache
def onednn_library():
    """oneDNN's library (the optional onednn-cpu-tbb wheel), or None. Its runtime
    libraries (TBB, the Intel compiler runtime) are loaded first: they sit in the
    environment's lib folder, which the loader does not search."""
    lib_dir = os.path.join(sys.prefix, "lib")
    if not _onednn_installed():
        return None
    try:
        for name in ("libtbb.so.12", "libimf.so", "libintlc.so.5", "libsvml.so"):
            if os.path.exists(os.path.join(lib_dir, name)):
                ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
        return ctypes.CDLL(os.path.join(lib_dir, "libdnnl.so.3"))
    except OSError:
        return None


def available_blas() -> tuple[str, ...]:
    """The `Optimizations.blas` values this machine can run."""
    return ("auto", "numpy") + (("mkl",) if _mkl_path() is not None else ()) + (
        ("onednn",) if _onednn_installed() else ())


@functools.cache
def cpu() -> dict:
    """The CPU model and the ISA extensions that decide kernel speed (Linux /proc/cpuinfo)."""
    import platform

    info = {"model": platform.processor() or platform.machine(), "isa": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
              "amx_tile")
    return {"model": fields.get("model name", info["model"]),
            "isa": [f for f in wanted if f in flags]}


def threading_layer() -> str:
    """The numba threading layer that runs ndwork's parallel kernels (tbb or omp)."""
    numba.get_num_threads()  # starts the layer's threads if none ran yet
    return numba.threading_layer()


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
    """Which dtype each kind of array uses: the one place that decides them.

    `compute` is what batches, elementwise ops and kernels run in, `param` what master
    weights (and optimizer moments) are kept in, `output` what forecasts leave the
    model in. Mixed precision: `low` (bfloat16 or float16) is what the dense layers'
    GEMM operands are rounded to (they accumulate in float32); with `store_low` the
    hidden layers' activations are kept in it too (half the memory of the graph), and
    `per_shape` leaves each layer's GEMM in float32 unless its low-precision GEMM
    measured faster on this machine ("auto": a speed choice, activations stay float32).
    """

    compute: np.dtype
    param: np.dtype
    output: np.dtype
    low: np.dtype | None = None
    store_low: bool = False
    per_shape: bool = False


@functools.cache
def _policies() -> dict[str, DtypePolicy]:  # at first use: kernels import this module
    from ndwork.kernels.precision import BF16, FP16

    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    return {"fp32": DtypePolicy(f32, f32, f32), "fp64": DtypePolicy(f64, f64, f64),
            "bf16": DtypePolicy(f32, f32, f32, BF16, store_low=True),
            "fp16": DtypePolicy(f32, f32, f32, FP16, store_low=True),
            "auto": DtypePolicy(f32, f32, f32, BF16, per_shape=True)}


@dataclasses.dataclass(frozen=True)
class Optimizations:
    """The per-process optimization switches.

    kernels:   "numba" (compiled kernels) or "numpy" (the plain reference kernels).
    attention: "flash" (tiled, O(N·d) memory) or "naive" (materialized scores).
    threads:   numba and BLAS threads together; None leaves the machine default.
    precision: "fp32"; "bf16" or "fp16" (mixed precision: float32 master weights and
               optimizer state, dense layers' GEMMs on operands rounded to the low
               precision accumulating in float32, hidden activations kept in it; fp16
               adds dynamic loss scaling); "auto" (each dense layer's GEMM in bf16 where
               that measured faster than float32 on this machine, activations float32);
               or "fp64" (for verification: gradient and fidelity checks). The
               README's "Mixed precision" says what each does.
    blas:      the BLAS of the compiled kernels' float32 GEMMs: "numpy" (numpy's own,
               OpenBLAS in its wheels), "mkl" or "onednn" (optional wheels), or "auto"
               (the fastest per shape, measured once per machine: see
               ndwork.kernels.gemm).
    """

    kernels: str = "numba"
    attention: str = "flash"
    threads: int | None = None
    precision: str = "fp32"
    blas: str = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("kernels", KERNELS), ("attention", ATTENTION),
                              ("precision", PRECISIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"Optimizations.{name}={value!r} is not known; use one of {allowed}."
                )
        if self.blas not in available_blas():
            why = f"is not installed here (pip install 'ndwork[{self.blas}]')" \
                if self.blas in BLAS else "is not known"
            raise ValueError(f"Optimizations.blas={self.blas!r} {why}; available here: "
                             f"{available_blas()}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(
                f"Optimizations.threads={self.threads!r} must be a positive int or None."
            )

    @property
    def dtypes(self) -> DtypePolicy:
        return _policies()[self.precision]

    def switches(self) -> dict:
        """The switches that travel with work to other threads and dask workers."""
        return {"kernels": self.kernels, "attention": self.attention,
                "precision": self.precision, "blas": self.blas}


_state = threading.local()
_DEFAULT = Optimizations()


def active() -> Optimizations:
    """The configuration in force in this thread (the defaults outside any context)."""
    return getattr(_state, "current", _DEFAULT)


@functools.cache
def _controller():
    """One scan of the loaded thread pools (threadpoolctl rescans on every new limiter)."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS numba's np.dot calls)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _kernel_blas(lib) -> bool:
    """numba's np.dot calls scipy's BLAS; numpy's GEMMs call numpy's own."""
    return "scipy" in os.path.basename(os.path.dirname(lib.filepath)) and \
        "numpy" not in lib.filepath


class _SharedLimit:
    """A process-wide BLAS thread limit that several threads may hold at once.

    threadpoolctl's limits are process-wide, so enter/exit from concurrent threads
    would interleave and could leave BLAS pinned: the first holder sets the limit, the
    last one out restores it, and holders in between share it.
    """

    def __init__(self, select):
        self.select = select
        self._lock = threading.Lock()
        self._holders = 0
        self._originals: list[tuple] = []

    @functools.cached_property
    def libraries(self) -> list:
        return [lib for lib in _controller().lib_controllers
                if lib.user_api == "blas" and self.select(lib)]

    @contextlib.contextmanager
    def hold(self, threads: int) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._originals = [(lib, lib.num_threads) for lib in self.libraries]
                for lib, before in self._originals:
                    if before != threads:
                        lib.set_num_threads(threads)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    for lib, threads_before in self._originals:
                        if threads_before != threads:
                            lib.set_num_threads(threads_before)


_GEMM_BLAS = _SharedLimit(lambda lib: not _kernel_blas(lib))
_KERNEL_BLAS = _SharedLimit(_kernel_blas)
# numpy's BLAS on one thread while another library takes the big GEMMs: a limit of its
# own, so that it overrides a `threads` limit held around it (see gemm.quiet_numpy_blas)
_QUIET_GEMM_BLAS = _SharedLimit(lambda lib: not _kernel_blas(lib))


def numpy_blas_single_threaded() -> contextlib.AbstractContextManager:
    return _QUIET_GEMM_BLAS.hold(1)


def blas_threads(threads: int) -> contextlib.AbstractContextManager:
    """Limit the BLAS that numpy's GEMMs call to `threads` for the process (shared)."""
    return _GEMM_BLAS.hold(threads)


def kernel_blas_single_threaded() -> contextlib.AbstractContextManager:
    """BLAS called from inside numba's parallel loops runs one thread per loop thread.

    fit and predict hold it for their whole run; a parallel kernel holds it too, which
    costs a lock and a counter when it is already held."""
    return _KERNEL_BLAS.hold(1)


@contextlib.contextmanager
def optimizations(**switches) -> Iterator[Optimizations]:
    """Run a block under changed switches: `with ndwork.optimizations(kernels="numpy"): ...`.

    `threads` sets numba's threads (for this thread) and BLAS's (for the process,
    shared with other threads that set it: the first one's value holds) together so
    they never oversubscribe; both are restored on exit. BLAS called from numba's
    parallel loops runs single-threaded inside the block.
    """
    previous = active()
    opts = dataclasses.replace(previous, **switches)
    numba_threads = numba.get_num_threads()
    limits = contextlib.nullcontext()
    if opts.threads is not None:
        numba.set_num_threads(min(opts.threads, numba.config.NUMBA_NUM_THREADS))
        limits = blas_threads(opts.threads)
    _state.current = opts
    try:
        with limits, kernel_blas_single_threaded():
            yield opts
    finally:
        _state.current = previous
        numba.set_num_threads(numba_threads)
