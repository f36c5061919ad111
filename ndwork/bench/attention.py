"""Attention suite: flash against naive (and torch's scaled_dot_product_attention when
the peers extra is installed) over sequence lengths, causal and not: forward and
forward+backward time, GFLOP/s and peak extra memory.

FLOPs (FlashAttention-2's convention): forward 4·B·H·N²·d (half when causal), backward
2.5x the forward (it recomputes the scores), so forward+backward 3.5x the forward.
Peak memory is the growth of peak RSS during one forward+backward over the inputs, in
a fresh process per point, so numba's allocations count too; it
includes what attention returns (out, lse, dq, dk, dv). Naive points whose score
matrices would pass the memory cap are not run, and the table says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from ndwork.bench.common import table, timeit

FWD_BWD_FLOPS = 3.5  # forward 1x + backward 2.5x, in units of the forward

SCRIPT = textwrap.dedent("""
    import json, sys, time, statistics
    import numpy as np
    kind, b, h, n, d, causal, repeat = sys.argv[1:8]
    b, h, n, d, repeat, causal = int(b), int(h), int(n), int(d), int(repeat), causal == "1"

    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))

    def make(size):
        rng = np.random.default_rng(0)
        return [rng.normal(size=(b, h, size, d)).astype(np.float32) for _ in range(4)]

    if kind == "torch":
        import torch
        torch.set_num_threads(2)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        def calls(arrays):
            tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in arrays[:3])
            tdo = torch.tensor(arrays[3])
            def fwd():
                with torch.no_grad():
                    return sdpa(tq, tk, tv, is_causal=causal)
            def fwd_bwd():
                out = sdpa(tq, tk, tv, is_causal=causal)
                out.backward(tdo)
            return fwd, fwd_bwd
    else:
        from ndwork.kernels import attention as a
        forward = getattr(a, f"{kind}_attention_forward")
        backward = getattr(a, f"{kind}_attention_backward")
        def calls(arrays):
            q, k, v, do = arrays
            def fwd():
                return forward(q, k, v, causal)
            def fwd_bwd():
                out, lse = forward(q, k, v, causal)
                backward(q, k, v, out, lse, do, causal)
            return fwd, fwd_bwd
    for fn in calls(make(8)):
        fn()  # compile and initialize at a tiny size, so no memory of size N is recycled
    fwd, fwd_bwd = calls(make(n))
    before = rss("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")
    fwd_bwd()  # the first call at this size: its peak is what attention needs
    peak = rss("VmHWM:") - before  # includes what it returns: out, lse, dq, dk, dv
    times = {}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        fn()
        samples = []
        for _ in range(repeat):
            t = time.perf_counter(); fn(); samples.append(time.perf_counter() - t)
        times[name] = statistics.median(samples)
    print(json.dumps({"peak_extra_bytes": peak, **times}))
""")


def _point(kind, b, h, n, d, causal, repeat):
    result = subprocess.run([sys.executable, "-c", SCRIPT, kind, str(b), str(h), str(n), str(d),
                             str(int(causal)), str(repeat)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{kind} attention at N={n} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def block_sweep(n: int = 2048, heads: int = 4, d: int = 64, sizes=(32, 64, 128, 256),
                repeat: int = 3) -> list[dict]:
    """Forward + backward time of flash attention per (block_q, block_k), in this process."""
    from ndwork.kernels.attention import flash_attention_backward, flash_attention_forward

    rng = np.random.default_rng(0)
    q, k, v, do = (rng.normal(size=(1, heads, n, d)).astype(np.float32) for _ in range(4))
    rows = []
    for bq in sizes:
        for bk in sizes:
            def step(bq=bq, bk=bk):
                out, lse = flash_attention_forward(q, k, v, False, None, bq, bk)
                flash_attention_backward(q, k, v, out, lse, do, False, None, bq, bk)
            seconds = timeit(step, repeat=repeat, min_time=0)["median_s"]
            rows.append({"block_q": bq, "block_k": bk, "fwd+bwd ms": seconds * 1e3})
    return rows


TRAINING_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    import ndwork
    from ndwork import NeuralForecast
    from ndwork.models import VanillaTransformer
    kind, input_size, windows, steps = sys.argv[1], *map(int, sys.argv[2:5])
    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
    n = input_size + 24 + 64
    t = np.arange(n)
    df = pd.DataFrame({"unique_id": "s", "ds": t, "y": np.sin(t / 50).astype(np.float32)})
    def fit(size, count):
        m = VanillaTransformer(h=24, input_size=size, windows_batch_size=windows, max_steps=count)
        with ndwork.optimizations(attention=kind):
            NeuralForecast([m], freq=1).fit(df, verbose=False)
    fit(32, 1)  # compile first
    open("/proc/self/clear_refs", "w").write("5")
    start = time.perf_counter()
    fit(input_size, steps)
    print(rss("VmHWM:"), time.perf_counter() - start)
""")


def long_input_training(input_size: int = 8192, windows: int = 8, steps: int = 3,
                        naive_sizes=(1024, 2048)) -> list[dict]:
    """Peak RSS of VanillaTransformer training steps on long inputs (fresh process each):
    flash at `input_size`; naive at smaller sizes, since at input_size its scores alone
    (windows x heads x N² floats per attention) pass this machine's memory."""
    rows = []
    for kind, size in [("flash", input_size)] + [("naive", n) for n in naive_sizes] + \
            [("flash", n) for n in naive_sizes]:
        result = subprocess.run([sys.executable, "-c", TRAINING_SCRIPT, kind, str(size),
                                 str(windows), str(steps)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        peak, seconds = result.stdout.split()
        rows.append({"attention": kind, "input_size": size, "windows": windows, "steps": steps,
                     "peak GiB": int(peak) / 2**30, "seconds": float(seconds)})
    # one (windows, 4 heads, N, N) float32 score array per attention, at the flash size
    rows.append({"attention": "naive (scores alone, computed)", "input_size": input_size,
                 "windows": windows, "peak GiB": windows * 4 * input_size**2 * 4 / 2**30})
    return rows


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run(quick: bool = False, lengths=None, batch: int = 1, heads: int = 4, d: int = 64,
        naive_cap_bytes: int = 6 * 2**30, sweep: bool = True, long_inputs: bool = True) -> dict:
    lengths = lengths or ([256, 1024, 2048] if quick else [256, 1024, 2048, 4096, 8192, 16384])
    kinds = ["flash", "naive"] + (["torch"] if _has_torch() else [])
    rows = []
    for causal in (False, True):
        for n in lengths:
            flops = 4 * batch * heads * n * n * d * (0.5 if causal else 1.0)
            repeat = 3 if n <= 4096 else 1
            for kind in kinds:
                row = {"N": n, "causal": causal, "kind": kind}
                # naive keeps about four (B, H, N, N) float32 arrays alive in its backward
                if kind == "naive" and 4 * 4 * batch * heads * n * n > naive_cap_bytes:
                    row["note"] = "not run: over the memory cap"
                    rows.append(row)
                    continue
                m = _point(kind, batch, heads, n, d, causal, repeat)
                row.update({"forward ms": m["forward"] * 1e3,
                            "fwd+bwd ms": m["forward_backward"] * 1e3,
                            "forward GFLOP/s": flops / m["forward"] / 1e9,
                            "fwd+bwd GFLOP/s": FWD_BWD_FLOPS * flops / m["forward_backward"]
                            / 1e9,
                            "peak MiB": m["peak_extra_bytes"] / 2**20})
                rows.append(row)
    return {"rows": rows, "batch": batch, "heads": heads, "d": d,
            "naive_cap_bytes": naive_cap_bytes, "memory_ratio": _memory_ratios(rows),
            "block_sweep": block_sweep(n=1024 if quick else 2048) if sweep else [],
            "long_input_training": (long_input_training(*((1024, 2, 1, (256,)) if quick else ()))
                                    if long_inputs else [])}


def _memory_ratios(rows) -> dict:
    """naive / flash peak memory per N (non-causal), and the fitted slope in N."""
    flash = {r["N"]: r.get("peak MiB") for r in rows if r["kind"] == "flash" and not r["causal"]}
    naive = {r["N"]: r.get("peak MiB") for r in rows if r["kind"] == "naive" and not r["causal"]}
    ratios = {n: naive[n] / max(flash[n], 1e-3) for n in naive if naive.get(n) and flash.get(n)}
    out = {"by_N": ratios}
    if len(ratios) >= 2:
        ns = np.array(sorted(ratios), dtype=float)
        slope, intercept = np.polyfit(ns, [ratios[int(n)] for n in ns], 1)
        out.update(slope_per_token=slope, extrapolated_at_320000=slope * 320_000 + intercept)
    return out


def frame(results: dict):
    """The results as a pandas frame, for the workbench's plots."""
    import pandas as pd

    return pd.DataFrame(results["rows"])


def render(results: dict) -> str:
    cols = ["N", "causal", "kind", "forward ms", "fwd+bwd ms", "forward GFLOP/s",
            "fwd+bwd GFLOP/s", "peak MiB", "note"]
    ratio = results["memory_ratio"]
    lines = [table(results["rows"], cols),
             f"\nB={results['batch']} H={results['heads']} d={results['d']}; naive/flash peak "
             f"memory by N: { {n: round(r) for n, r in ratio['by_N'].items()} }"]
    if results["block_sweep"]:
        lines.append("\nblock sweep (flash, non-causal, forward+backward):\n"
                     + table(results["block_sweep"], ["block_q", "block_k", "fwd+bwd ms"]))
    if results["long_input_training"]:
        lines.append("\nVanillaTransformer training on long inputs (peak RSS of the process):\n"
                     + table(results["long_input_training"], ["attention", "input_size",
                                                              "windows", "steps", "peak GiB",
                                                              "seconds"]))
    if "extrapolated_at_320000" in ratio:
        lines.append(f"linear fit of that ratio in N, extrapolated to N=320,000: "
                     f"{ratio['extrapolated_at_320000']:,.0f}x")
    return "\n".join(lines)
