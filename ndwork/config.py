"""The one place that decides how ndwork runs: `Optimizations` and the active configuration.

Every switch of the four optimizations lives here. Kernels, ops and models ask
`active()` which implementation to use; nothing else reads environment variables
or globals to decide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

import numba
import numpy as np
from threadpoolctl import threadpool_limits

KERNELS = ("numba", "numpy")
ATTENTION = ("flash", "naive")
PRECISIONS = ("fp32",)


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
    """Which dtype each kind of array uses. Models never name a dtype themselves.

    `compute` is what activations and kernels run in, `param` what master weights
    are kept in, `output` what leaves the model. Mixed precision adds policies here.
    """

    compute: np.dtype
    param: np.dtype
    output: np.dtype


_POLICIES = {"fp32": DtypePolicy(np.dtype(np.float32), np.dtype(np.float32), np.dtype(np.float32))}


@dataclasses.dataclass(frozen=True)
class Optimizations:
    """The per-process optimization switches.

    kernels:   "numba" (compiled kernels) or "numpy" (the plain reference kernels).
    attention: "flash" (tiled, O(N·d) memory) or "naive" (materialized scores).
    threads:   numba and BLAS threads together; None leaves the machine default.
    precision: "fp32" (mixed precision is added by a later issue).
    """

    kernels: str = "numba"
    attention: str = "flash"
    threads: int | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name, allowed in (("kernels", KERNELS), ("attention", ATTENTION),
                              ("precision", PRECISIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"Optimizations.{name}={value!r} is not known; use one of {allowed}."
                )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(
                f"Optimizations.threads={self.threads!r} must be a positive int or None."
            )

    @property
    def dtypes(self) -> DtypePolicy:
        return _POLICIES[self.precision]


_state = threading.local()
_DEFAULT = Optimizations()


def active() -> Optimizations:
    """The configuration in force in this thread (the defaults outside any context)."""
    return getattr(_state, "current", _DEFAULT)


@contextlib.contextmanager
def optimizations(**switches) -> Iterator[Optimizations]:
    """Run a block under changed switches: `with ndwork.optimizations(kernels="numpy"): ...`.

    `threads` sets numba's and BLAS's thread counts together so they never oversubscribe;
    both are restored on exit.
    """
    previous = active()
    opts = dataclasses.replace(previous, **switches)
    numba_threads = numba.get_num_threads()
    limits = contextlib.nullcontext()
    if opts.threads is not None:
        numba.set_num_threads(min(opts.threads, numba.config.NUMBA_NUM_THREADS))
        limits = threadpool_limits(limits=opts.threads)
    _state.current = opts
    try:
        with limits:
            yield opts
    finally:
        _state.current = previous
        numba.set_num_threads(numba_threads)
