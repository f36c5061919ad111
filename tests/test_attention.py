"""Flash attention against the float64 naive reference; masks, edge sizes, memory."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import assert_close_f32

import ndwork
from ndwork.kernels.attention import (
    flash_attention_backward,
    flash_attention_forward,
    naive_attention_backward,
    naive_attention_forward,
)

SMALL_BLOCKS = dict(block_q=16, block_k=8)  # several tiles even at small N
# With one visible key the softmax is exactly 1 and dq, dk are exactly 0; float32 leaves
# rounding of order 1e-7 there, so gradients get this absolute floor (inputs are O(1)).
GRAD_ATOL = 1e-6


def inputs(b, h, nq, nk, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32)
            for shape in ((b, h, nq, d), (b, h, nk, d), (b, h, nk, d), (b, h, nq, d))]


def compare(q, k, v, dout, causal=False, mask=None, blocks=SMALL_BLOCKS):
    out, lse = flash_attention_forward(q, k, v, causal, mask, **blocks)
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, dout))
    ref_out, ref_lse = naive_attention_forward(q64, k64, v64, causal, mask)
    assert_close_f32(out, ref_out)
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    assert_close_f32(lse[finite], ref_lse[finite])
    grads = flash_attention_backward(q, k, v, out, lse, dout, causal, mask, **blocks)
    ref_grads = naive_attention_backward(q64, k64, v64, ref_out, ref_lse, do64, causal, mask)
    for got, ref in zip(grads, ref_grads, strict=True):
        assert_close_f32(got, ref, atol=GRAD_ATOL)
    return out, grads


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(1, 1), (37, 37), (64, 64), (20, 45), (45, 20), (1, 9)])
def test_matches_reference(causal, nq, nk):
    compare(*inputs(2, 3, nq, nk, 16), causal=causal)


@pytest.mark.parametrize("d", [16, 32, 64, 128])
def test_head_sizes(d):
    compare(*inputs(1, 2, 50, 50, d, seed=d), causal=True)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_mask(causal):
    q, k, v, dout = inputs(3, 2, 30, 30, 16)
    mask = np.zeros((3, 30), dtype=bool)
    mask[0, 20:] = True
    mask[1, ::3] = True
    compare(q, k, v, dout, causal, mask)


def test_default_blocks():
    compare(*inputs(1, 2, 300, 300, 64), causal=True, blocks={})


def test_fully_masked_rows_are_zero_with_zero_gradients():
    q, k, v, dout = inputs(2, 2, 10, 10, 16)
    mask = np.zeros((2, 10), dtype=bool)
    mask[1] = True  # batch 1 sees no key at all
    mask[0, 0] = True  # with causal, query 0 of batch 0 sees nothing
    out, (dq, dk, dv) = compare(q, k, v, dout, causal=True, mask=mask)
    assert not np.isnan(out).any()
    assert (out[1] == 0).all() and (out[0, :, 0] == 0).all()
    assert (dq[1] == 0).all() and (dk[1] == 0).all() and (dv[1] == 0).all()
    assert (dq[0, :, 0] == 0).all()


def test_a_nan_score_makes_its_rows_nan_as_the_reference():
    q, k, v, _ = inputs(1, 2, 40, 40, 16)
    k[0, 1, 7, 3] = np.nan  # every query of head 1 sees key 7 (not causal)
    out, lse = flash_attention_forward(q, k, v, **SMALL_BLOCKS)
    ref_out, _ = naive_attention_forward(q, k, v)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    assert np.isnan(out[0, 1]).all() and not np.isnan(out[0, 0]).any()
    assert np.isnan(lse[0, 1]).all()


def test_switch_selects_the_implementation():
    from ndwork.autodiff import Tensor, backward, ops

    q, k, v, dout = inputs(1, 2, 40, 40, 16)
    results = {}
    for kind in ("flash", "naive"):
        with ndwork.optimizations(attention=kind):
            tensors = [Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
            out = ops.attention(*tensors, causal=True)
            backward(out, dout)
            results[kind] = [out.data] + [t.grad for t in tensors]
    for a, b in zip(results["flash"], results["naive"], strict=True):
        assert_close_f32(a, b)


@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v: (q, k[..., :8], v[..., :8]), "share batch, heads and head size"),
    (lambda q, k, v: (q, k, v[:, :, :5]), "same shape"),
    (lambda q, k, v: (q.astype(np.int32), k, v), "float array"),
    (lambda q, k, v: (q[0], k[0], v[0]), r"\(batch, heads, N, d\)"),
])
def test_bad_shapes_and_dtypes(bad, match):
    q, k, v, _ = inputs(1, 2, 10, 10, 16)
    with pytest.raises((ValueError, TypeError), match=match):
        flash_attention_forward(*bad(q, k, v))


def test_bad_mask_and_blocks():
    q, k, v, _ = inputs(2, 2, 10, 10, 16)
    with pytest.raises(ValueError, match="key_padding_mask must be bool of shape"):
        flash_attention_forward(q, k, v, key_padding_mask=np.zeros((2, 9), bool))
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        flash_attention_forward(q, k, v, key_padding_mask=np.zeros((2, 10)))
    with pytest.raises(ValueError, match="block_q must be a positive integer"):
        flash_attention_forward(q, k, v, block_q=0)


MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from ndwork.kernels import attention as a

    def rss(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))

    kind, n = sys.argv[1], int(sys.argv[2])
    fwd = getattr(a, f"{kind}_attention_forward")
    bwd = getattr(a, f"{kind}_attention_backward")
    small = [np.ones((1, 1, 8, 64), np.float32)] * 4
    out, lse = fwd(*small[:3], True)
    bwd(*small[:3], out, lse, small[3], True)  # compile before measuring
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.normal(size=(1, 4, n, 64)).astype(np.float32) for _ in range(4))
    before = rss("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
    out, lse = fwd(q, k, v, True)
    grads = bwd(q, k, v, out, lse, do, True)
    outputs = out.nbytes + lse.nbytes + sum(g.nbytes for g in grads)
    print(rss("VmHWM:") - before - outputs)
""")


def peak_extra_bytes(kind: str, n: int) -> int:
    """Peak resident memory beyond inputs and outputs, measured in a fresh process."""
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, kind, str(n)],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def test_flash_memory_stays_small_where_naive_grows_quadratically():
    mib = 2**20
    flash = peak_extra_bytes("flash", 8192)
    assert flash < 64 * mib, f"flash attention took {flash / mib:.0f} MiB extra"
    naive = peak_extra_bytes("naive", 2048)  # one (4, 2048, 2048) float32 score array: 64 MiB
    assert naive > 64 * mib, f"naive attention took only {naive / mib:.0f} MiB"


@pytest.mark.parametrize("kind", ["flash", "naive"])
@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_layer_gradient_against_finite_differences(kind, causal):
    from ndwork.autodiff import Tensor, backward
    from ndwork.nn import ParameterSpec
    from ndwork.nn.transformer import MultiHeadAttention
    from ndwork.training.trainer import Parameters

    spec = ParameterSpec()
    layer = MultiHeadAttention(spec, "mha", hidden_size=8, n_heads=2)
    layout = Parameters(spec.shapes)
    rng = np.random.default_rng(3)
    params = spec.initialize(rng, np.float64)
    x_q, x_kv = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 7, 8))
    weights = rng.normal(size=(2, 5, 8))
    mask = np.zeros((2, 7), bool)
    mask[1, 5:] = True

    def loss(flat):
        p = layout.tensors(flat)
        out = layer(p, Tensor(x_q), Tensor(x_kv), causal, mask)
        return out, p

    with ndwork.optimizations(attention=kind):
        out, p = loss(params)
        backward(out, weights)
        grads = layout.gather_grads(p)
        eps = 1e-6
        for i in rng.choice(params.size, 40, replace=False):
            up, down = params.copy(), params.copy()
            up[i] += eps
            down[i] -= eps
            numeric = ((loss(up)[0].data - loss(down)[0].data) * weights).sum() / (2 * eps)
            assert grads[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
