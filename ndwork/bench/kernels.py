"""Kernel suite: every numba kernel against its numpy reference (and numexpr for the
elementwise ones), in GB/s or GFLOP/s, plus the machine's float32 GEMM peak."""

from __future__ import annotations

import numexpr as ne
import numpy as np

from ndwork.bench.common import gemm_peak, table, timeit
from ndwork.kernels import compiled, reference

# numexpr forms of the elementwise kernels (GELU needs erf, which numexpr lacks)
NUMEXPR = {
    "relu_forward": lambda x: ne.evaluate("where(x > 0, x, 0)"),
    "tanh_forward": lambda x: ne.evaluate("tanh(x)"),
    "sigmoid_forward": lambda x: ne.evaluate("1 / (1 + exp(-x))"),
    "relu_backward": lambda y, dy: ne.evaluate("where(y > 0, dy, 0)"),
    "tanh_backward": lambda y, dy: ne.evaluate("dy * (1 - y * y)"),
    "sigmoid_backward": lambda y, dy: ne.evaluate("dy * y * (1 - y)"),
}


def _cases(size: int, rng) -> list[tuple[str, tuple, float, str]]:
    """(kernel, args, work, unit): work in bytes moved (GB/s) or FLOPs (GFLOP/s)."""
    f32 = np.float32
    x = rng.normal(size=size).astype(f32)
    dy = rng.normal(size=size).astype(f32)
    rows = size // 1024
    x2 = x.reshape(rows, 1024)
    dy2 = dy.reshape(rows, 1024)
    nbytes = x.nbytes
    cases = []
    for name in ("relu", "tanh", "sigmoid", "gelu", "elu"):
        cases.append((f"{name}_forward", (x,), 2 * nbytes, "GB/s"))
        cases.append((f"{name}_backward", (x, dy), 3 * nbytes, "GB/s"))
    cases.append(("softmax_forward", (x2,), 2 * nbytes, "GB/s"))
    cases.append(("softmax_backward", (x2, dy2), 3 * nbytes, "GB/s"))
    gamma, beta = np.ones(1024, f32), np.zeros(1024, f32)
    _, mean, rstd = reference("layernorm_forward")(x2, gamma, beta)
    cases.append(("layernorm_forward", (x2, gamma, beta), 2 * nbytes, "GB/s"))
    cases.append(("layernorm_backward", (x2, gamma, mean, rstd, dy2), 3 * nbytes, "GB/s"))
    y_hat, y = x2[:, :24].copy(), dy2[:, :24].copy()
    for loss in ("mae", "mse", "huber", "quantile", "smape"):
        cases.append(("point_loss", (loss, y_hat, y, np.ones_like(y), 0.5), 4 * y.nbytes, "GB/s"))
    q = np.array([0.05, 0.1, 0.5, 0.9, 0.95])
    yq = np.repeat(y_hat[..., None], 5, axis=2)
    cases.append(("mqloss", (yq, y, np.ones_like(y), q), 2 * yq.nbytes, "GB/s"))
    cases.append(("maxpool_forward", (x2, 2), 1.5 * nbytes, "GB/s"))
    cases.append(("interpolate_forward", (x2[:, :8].copy(), 96), 13 * rows * 96 * 4, "GB/s"))
    p = rng.normal(size=size).astype(f32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    cases.append(("adam_update", (p, dy, m, v, 1, 1e-3), 7 * nbytes, "GB/s"))
    cases.append(("sgd_update", (p, dy, np.zeros_like(p), 1e-3, 0.9), 5 * nbytes, "GB/s"))
    win = x[: 1024 * 120].reshape(1024, 120)
    cases.append(("scaler_statistics", ("standard", win, np.ones_like(win)), 2 * win.nbytes,
                  "GB/s"))
    a = rng.normal(size=(1024, 1024)).astype(f32)
    w = rng.normal(size=(1024, 1024)).astype(f32) / 32
    b = np.zeros(1024, f32)
    cases.append(("linear_forward", (a, w, b, "relu"), 2 * 1024**3, "GFLOP/s"))
    yl = reference("linear_forward")(a, w, b, "relu")
    cases.append(("linear_backward", (a, w, yl, a, "relu"), 4 * 1024**3, "GFLOP/s"))
    return cases


def _label(name, args):
    return f"{name}({args[0]})" if isinstance(args[0], str) else name


def run(quick: bool = False) -> dict:
    rng = np.random.default_rng(0)
    size = 2**20 if quick else 2**22
    repeat = 3 if quick else 7
    rows = []
    for name, args, work, unit in _cases(size, rng):
        scale = 1e9
        row = {"kernel": _label(name, args), "unit": unit}
        for side, fn in (("numba", compiled(name)), ("numpy", reference(name)),
                         ("numexpr", NUMEXPR.get(name))):
            if fn is None:
                continue
            copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            t = timeit(lambda fn=fn, copies=copies: fn(*copies), repeat=repeat)["median_s"]
            row[side] = work / t / scale
        row["numba/numpy"] = row["numba"] / row["numpy"]
        if "numexpr" in row:
            row["numexpr/numpy"] = row["numexpr"] / row["numpy"]
        rows.append(row)
    # data preparation: scaling a batch of windows with exogenous channels, (W, T, C)
    temporal = rng.normal(size=(1024, 120, 16)).astype(np.float32)
    shift = rng.normal(size=(1024, 1, 16)).astype(np.float32)
    scale = rng.uniform(1, 2, size=(1024, 1, 16)).astype(np.float32)
    prep = {"numpy": lambda: (temporal - shift) / scale,
            "numexpr": lambda: ne.evaluate("(t - a) / b", local_dict={"t": temporal, "a": shift, "b": scale})}
    row = {"kernel": "window_scaling (1024x120x16)", "unit": "GB/s"}
    for side, fn in prep.items():
        row[side] = 2 * temporal.nbytes / timeit(fn, repeat=repeat)["median_s"] / 1e9
    row["numexpr/numpy"] = row["numexpr"] / row["numpy"]
    rows.append(row)
    peak = gemm_peak()
    return {"rows": rows, "gemm_peak_gflops": peak, "elements": size}


def render(results: dict) -> str:
    cols = ["kernel", "unit", "numba", "numpy", "numexpr", "numba/numpy", "numexpr/numpy"]
    return (table(results["rows"], cols)
            + f"\n\nfloat32 GEMM peak (n=2048): {results['gemm_peak_gflops']:.0f} GFLOP/s")
