"""Op-level profiling of the autodiff engine, like torch.profiler's table.

    with ndwork.profile() as prof:
        nf.fit(df)
    prof.table()        # per op: calls, time, share, GFLOP/s, bytes, hotspot class
    prof.gemm_seconds   # the GEMMs inside the ops, by shape (m x k x n, layouts, threads)
    prof.gemm_blas      # the BLAS that ran each shape ("numpy", "mkl", "onednn")
    prof.timeline       # (seconds, RSS bytes, traced bytes) samples during the run
                        # (traced bytes with profile(memory=True) only)
    prof.sampled        # a pyinstrument session, with sampling=True (the `lab` extra)

Plots of a profile live in `widgets/`; ndwork itself never imports a plotting library.
"""

from __future__ import annotations

import contextlib
import threading
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pandas as pd

_active = threading.local()

# The seed system's guide: what share of a step makes an op a hotspot.
HOTSPOT_CLASSES = [(0.20, "over 20%: optimize now"), (0.10, "10-20%"), (0.05, "5-10%"),
                   (0.0, "under 5%")]


_open = [0]  # profiles open in any thread: with none, ops skip the thread-local lookup


def current() -> Profile | None:
    return getattr(_active, "profile", None) if _open[0] else None


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Profile:
    """Accumulates per-op time (total and self), FLOPs and bytes, and the profiler's own
    time; samples memory every `interval` s."""

    def __init__(self, interval: float = 0.05):
        self.calls: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)  # total: children included
        self.self_seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = defaultdict(float)
        self.bytes: dict[str, int] = defaultdict(int)
        self.overhead_seconds = 0.0  # the profiler's own bookkeeping around every op
        # the compiled kernels' GEMMs by shape ("m x k x n, layouts, threads"), inside ops
        self.gemm_seconds: dict[str, float] = defaultdict(float)
        self.gemm_calls: dict[str, int] = defaultdict(int)
        self.gemm_blas: dict[str, str] = {}  # the BLAS that ran each shape ("onednn", ...)
        self.timeline: list[tuple[float, int, int]] = []
        self.interval = interval
        self.start = self.stop = 0.0
        self.sampled = None
        self._next_sample = 0.0
        self._children: list[float] = []  # per op running now: its children's total time

    def time(self, name: str, fn, *args):
        """Run fn(*args) as op `name`: returns (result, seconds); its self time excludes
        the ops it runs inside."""
        self._children.append(0.0)
        start = time.perf_counter()
        try:
            result = fn(*args)
        finally:
            seconds = time.perf_counter() - start
            children = self._children.pop()
            if self._children:
                self._children[-1] += seconds
        self.calls[name] += 1
        self.seconds[name] += seconds
        self.self_seconds[name] += seconds - children
        return result, seconds

    def gemm(self, label: str, fn, a, b, out=None, blas: str = ""):
        """Run the GEMM fn(a, b, out) of BLAS `blas` and charge its time to its shape
        `label`."""
        start = time.perf_counter()
        out = fn(a, b, out)
        self.gemm_seconds[label] += time.perf_counter() - start
        self.gemm_calls[label] += 1
        self.gemm_blas[label] = blas
        return out

    def add_overhead(self, seconds: float) -> None:
        """The profiler's own time around an op; inside another op it is not that op's."""
        self.overhead_seconds += seconds
        if self._children:
            self._children[-1] += seconds

    def count(self, name: str, flops: float, nbytes: int) -> None:
        self.flops[name] += flops
        self.bytes[name] += nbytes
        now = time.perf_counter()
        if now >= self._next_sample:
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
            self.timeline.append((now - self.start, _rss(), traced))
            self._next_sample = now + self.interval

    @property
    def wall_seconds(self) -> float:
        return (self.stop or time.perf_counter()) - self.start

    def table(self) -> pd.DataFrame:
        """One row per op (forward and backward apart), the profiler's own overhead, and
        "other" for the rest of the block's wall time. Shares are of self time."""
        total = self.wall_seconds
        rows = [{"op": name, "calls": self.calls[name], "total ms": self.seconds[name] * 1e3,
                 "self ms": self.self_seconds[name] * 1e3,
                 "share": self.self_seconds[name] / total,
                 "GFLOP": self.flops[name] / 1e9,
                 "GFLOP/s": self.flops[name] / self.seconds[name] / 1e9
                 if self.seconds[name] > 0 else 0.0,
                 "MiB allocated": self.bytes[name] / 2**20} for name in self.calls]
        overhead = self.overhead_seconds
        other = total - sum(self.self_seconds.values()) - overhead
        for name, seconds in ((PROFILER_ROW, overhead), (OTHER_ROW, other)):
            rows.append({"op": name, "calls": 0, "total ms": seconds * 1e3,
                         "self ms": seconds * 1e3, "share": seconds / total,
                         "GFLOP": 0.0, "GFLOP/s": 0.0, "MiB allocated": 0.0})
        frame = pd.DataFrame(rows).sort_values("self ms", ascending=False, kind="stable")
        frame["hotspot"] = [next(label for bound, label in HOTSPOT_CLASSES if s >= bound)
                            for s in frame["share"].clip(lower=0)]
        return frame.reset_index(drop=True)


PROFILER_ROW = "profiler overhead (measured)"
OTHER_ROW = "other (data, optimizer, Python)"


@contextlib.contextmanager
def profile(sampling: bool = False, memory: bool = False, interval: float = 0.05
            ) -> Iterator[Profile]:
    """Profile the ops run in this thread inside the block (and, with sampling=True,
    the whole block with pyinstrument). The RSS timeline is always sampled; memory=True
    also traces Python allocations (tracemalloc, which slows every allocation: off by
    default)."""
    prof = Profile(interval)
    sampler = None
    if sampling:
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.001)
    started_tracing = memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    previous = current()
    _active.profile = prof
    _open[0] += 1
    prof.start = time.perf_counter()
    if sampler:
        sampler.start()
    try:
        yield prof
    finally:
        if sampler:
            sampler.stop()
            prof.sampled = sampler
        prof.stop = time.perf_counter()
        _active.profile = previous
        _open[0] -= 1
        if started_tracing:
            tracemalloc.stop()


def flops(name: str, inputs: tuple, out: np.ndarray) -> float:
    """Floating-point operations of an op's forward (multiply-adds count two)."""
    if name == "linear":
        x, w = inputs[0], inputs[1]
        return 2.0 * x.data.size / x.shape[-1] * w.shape[0] * w.shape[1]
    if name == "matmul":
        return 2.0 * out.size * inputs[0].shape[-1]
    if name == "attention":
        q, k = inputs[0], inputs[1]
        return 4.0 * q.data.size * k.shape[-2]
    if name == "causal_conv1d":  # (B, T, C_out) outputs of K x C_in multiply-adds each
        w = inputs[1]
        return 2.0 * out.size * w.shape[0] * w.shape[1]
    if name == "conv2d":  # (B, H, W, C_out) outputs of Kh x Kw x C_in multiply-adds each
        return 2.0 * out.size * np.prod(inputs[1].shape[:3])
    if name == "recurrent":  # the input projection and each step's hidden product
        x, w_ih, w_hh = inputs[0], inputs[1], inputs[2]
        steps_rows = x.data.size / x.shape[-1]
        return 2.0 * steps_rows * w_ih.shape[1] * (w_ih.shape[0] + w_hh.shape[0])
    if name == "slstm":  # each step's head-wise hidden product
        r = inputs[1]
        return 2.0 * out.size * r.shape[2]
    if name == "mlstm":  # q kᵀ and the weighted sum of v, over the causal half
        return 2.0 * out.size * inputs[0].shape[1]
    if name == "headwise_linear":
        return 2.0 * out.size * inputs[1].shape[1]
    return float(out.size)
