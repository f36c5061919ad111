"""The GEMM dispatch: oneMKL against numpy's BLAS, the per-shape choice and its file."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close_f32

import ndwork
import ndwork.config
from ndwork.kernels import compiled, gemm, reference

needs_mkl = pytest.mark.skipif(ndwork.config.mkl_library() is None,
                               reason="the mkl wheel (a dev dependency) is not installed")
needs_onednn = pytest.mark.skipif(ndwork.config.onednn_library() is None,
                                  reason="the onednn wheel (a dev dependency) is not installed")
rng = np.random.default_rng(0)


def _operands(m, k, n):
    return rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)


@needs_mkl
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT", "strided"])
def test_mkl_matches_numpy_for_every_operand_layout(layout):
    a, b = _operands(70, 33, 45)
    if layout[0] == "T":
        a = np.ascontiguousarray(a.T).T  # same values, stored transposed
    if len(layout) == 2 and layout[1] == "T":
        b = np.ascontiguousarray(b.T).T
    if layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    assert_close_f32(gemm.mkl_matmul(a, b), a.astype(np.float64) @ b.astype(np.float64))


@needs_mkl
@needs_onednn
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT", "strided"])
def test_onednn_matches_numpy_for_every_operand_layout(layout):
    a, b = _operands(70, 33, 45)
    if layout[0] == "T":
        a = np.ascontiguousarray(a.T).T
    if len(layout) == 2 and layout[1] == "T":
        b = np.ascontiguousarray(b.T).T
    if layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    for _ in range(2):  # the second call runs the cached primitive on new data
        a, b = a * 2, b + 1
        assert_close_f32(gemm.onednn_matmul(a, b), a.astype(np.float64) @ b.astype(np.float64))


@needs_onednn
def test_onednn_primitives_are_per_thread():
    import concurrent.futures

    a, b = _operands(64, 32, 16)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda s: gemm.onednn_matmul(a * s, b), range(8)))
    for s, out in enumerate(outs):
        assert_close_f32(out, (a * s).astype(np.float64) @ b)


@pytest.mark.parametrize("blas", ["numpy", "mkl", "onednn"])
def test_a_product_is_written_into_out(blas):
    """The recurrent kernels write each step's product into their state arrays."""
    if blas not in ndwork.config.available_blas():
        pytest.skip(f"{blas} is not installed")
    a, b = _operands(128, 96, 128)  # above gemm.SMALL
    out = np.full((128, 128), np.nan, np.float32)
    with ndwork.optimizations(blas=blas):
        returned = gemm.matmul(a, b, out=out)
        with ndwork.profile():  # the profiled path hands out on too
            gemm.matmul(a[64:] * 2, b, out=out[64:])
        with pytest.raises(ValueError, match="(?i)out"):
            gemm.matmul(a, b, out=out[64:])
    assert returned is out
    assert_close_f32(out[:64], a[:64].astype(np.float64) @ b)
    assert_close_f32(out[64:], (a[64:] * 2).astype(np.float64) @ b)


@pytest.mark.parametrize("m", [1, 100, 4096])
def test_an_outer_product_equals_numpys_matmul(m):
    """K = 1 runs as a broadcast multiply (numpy's matmul loops slowly there): the same
    numbers, bit for bit, small or large, into out or not."""
    a, b = _operands(m, 1, 512)
    out = np.empty((m, 512), np.float32)
    np.testing.assert_array_equal(gemm.matmul(a, b), np.matmul(a, b))
    assert gemm.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, np.matmul(a, b))


def test_a_forecasts_products_of_few_rows_stay_on_numpys_blas(monkeypatch):
    """Within forecast_products (what model_outputs holds) a product of fewer than
    FORECAST_ROWS rows skips the BLAS dispatch; outside, the same product takes it."""
    a, b = _operands(24, 200, 600)  # above gemm.SMALL
    dispatched = []
    monkeypatch.setattr(gemm, "_blas_for",
                        lambda x, y: dispatched.append(x.shape) or gemm._numpy_matmul)
    gemm.matmul(a, b)
    assert dispatched == [(24, 200)]
    with gemm.forecast_products():
        np.testing.assert_array_equal(gemm.matmul(a, b), np.matmul(a, b))
        gemm.matmul(*_operands(gemm.FORECAST_ROWS, 200, 600))
    assert dispatched == [(24, 200), (gemm.FORECAST_ROWS, 200)]


def test_the_switch_picks_the_blas():
    a, b = _operands(128, 96, 128)  # above gemm.SMALL
    with ndwork.optimizations(blas="numpy"):
        np.testing.assert_array_equal(gemm.matmul(a, b), a @ b)
    with ndwork.optimizations(blas="mkl"):
        np.testing.assert_array_equal(gemm.matmul(a, b), gemm.mkl_matmul(a, b))
    if "onednn" in ndwork.config.available_blas():
        with ndwork.optimizations(blas="onednn"):
            np.testing.assert_array_equal(gemm.matmul(a, b), gemm.onednn_matmul(a, b))


@needs_mkl
@needs_onednn
@pytest.mark.parametrize("blas", ["numpy", "mkl", "onednn", "auto"])
def test_linear_kernels_match_their_reference_on_every_blas(blas):
    x, w = _operands(256, 64, 96)
    b = rng.normal(size=96).astype(np.float32)
    dy = rng.normal(size=(256, 96)).astype(np.float32)
    with ndwork.optimizations(blas=blas):
        y = compiled("linear_forward")(x, w, b, "relu")
        grads = compiled("linear_backward")(x, w, y, dy, "relu")
    assert_close_f32(y, reference("linear_forward")(x, w, b, "relu"))
    for got, want in zip(grads, reference("linear_backward")(x, w, y, dy, "relu"), strict=True):
        assert_close_f32(got, want)


@needs_mkl
def test_auto_measures_a_shape_once_and_keeps_it_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("NDWORK_CACHE_DIR", str(tmp_path / "ndwork"))
    choices = gemm._Choices("gemm", tuple(gemm.CANDIDATES))
    a, b = _operands(256, 128, 64)

    def pick(choices, a, b, threads):
        return choices.choose(gemm._key(a, b, threads), lambda: gemm._fastest(a, b))

    picked = pick(choices, a, b, 2)
    assert picked in ("numpy", "mkl", "onednn")
    saved = json.loads(Path(choices.path).read_text())
    assert saved == {"256x128x64 NN threads=2": picked}
    # a later process reads the file and does not measure again
    monkeypatch.setattr(gemm, "_fastest", lambda *args: pytest.fail("measured twice"))
    assert pick(gemm._Choices("gemm", tuple(gemm.CANDIDATES)), a, b, 2) == picked
    # a transposed operand or other threads is another shape
    monkeypatch.undo()
    monkeypatch.setenv("NDWORK_CACHE_DIR", str(tmp_path / "ndwork"))
    pick(choices, np.ascontiguousarray(a.T).T, b, 1)
    assert set(json.loads(Path(choices.path).read_text())) == {"256x128x64 NN threads=2",
                                                           "256x128x64 TN threads=1"}


@needs_mkl
def test_a_corrupt_choice_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NDWORK_CACHE_DIR", str(tmp_path / "ndwork"))
    choices = gemm._Choices("gemm", tuple(gemm.CANDIDATES))
    (tmp_path / "ndwork").mkdir()
    with open(choices.path, "w") as f:
        f.write("{not json")
    a, b = _operands(256, 128, 64)
    assert choices.choose(gemm._key(a, b, 2), lambda: gemm._fastest(a, b)) in (
        "numpy", "mkl", "onednn")
    assert json.loads(Path(choices.path).read_text())


def test_blas_not_installed_or_unknown_names_what_is_available(monkeypatch):
    with pytest.raises(ValueError, match=r"blas='openblas' is not known; available here: "
                                         r"\('auto', 'numpy'"):
        ndwork.Optimizations(blas="openblas")
    monkeypatch.setattr(ndwork.config, "_mkl_path", lambda: None)
    monkeypatch.setattr(ndwork.config, "_onednn_installed", lambda: False)
    for blas in ("mkl", "onednn"):
        with pytest.raises(ValueError, match=rf"blas='{blas}' is not installed here \(pip "
                                             rf"install 'ndwork\[{blas}\]'\); available here: "
                                             r"\('auto', 'numpy'\)"):
            ndwork.Optimizations(blas=blas)


@needs_onednn
def test_auto_gives_big_gemms_to_onednn_unless_threads_are_limited(monkeypatch):
    """oneDNN's TBB runtime takes every core whatever the limit: under one it would
    oversubscribe, so a limited context measures the others."""
    monkeypatch.setattr(ndwork.config, "_mkl_path", lambda: None)
    a, b = _operands(512, 256, 256)
    with ndwork.optimizations(blas="auto"):
        assert gemm._blas_for(a, b) is gemm.onednn_matmul
        assert gemm._blas_for(a[:8], b) is gemm._numpy_matmul  # under gemm.SMALL
    with ndwork.optimizations(blas="auto", threads=1):
        assert gemm._blas_for(a, b) is gemm._numpy_matmul
    monkeypatch.undo()
    if "mkl" in ndwork.config.available_blas():
        with ndwork.optimizations(blas="auto", threads=1):
            assert gemm._blas_for(a, b) in (gemm._numpy_matmul, gemm.mkl_matmul)
        assert gemm._fastest(a, b) in ("numpy", "mkl")


@needs_onednn
@needs_mkl
def test_auto_measures_onednn_against_mkl_per_shape_on_their_shared_threads(tmp_path,
                                                                            monkeypatch):
    """Both run on TBB's workers, so "auto" may pick MKL for a shape without OpenBLAS's
    spinning threads in the way; the choice is measured once and kept in its own file."""
    monkeypatch.setenv("NDWORK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gemm, "_TBB_CHOICES", gemm._Choices("gemm-tbb", ("onednn", "mkl")))
    a, b = _operands(512, 256, 256)
    with ndwork.optimizations(blas="auto"):
        assert gemm._blas_for(a, b) in (gemm.onednn_matmul, gemm.mkl_matmul)
        picked = json.loads(Path(gemm._TBB_CHOICES.path).read_text())
        assert list(picked) == [gemm._label(gemm._key(a, b, None))]
        assert picked[gemm._label(gemm._key(a, b, None))] in ("onednn", "mkl")
        monkeypatch.setattr(gemm, "_fastest", lambda a, b, default: "mkl")
        a_t = np.ascontiguousarray(a.T).T  # another layout: another shape, measured
        assert gemm._blas_for(a_t, b) is gemm.mkl_matmul
        assert_close_f32(gemm.matmul(a_t, b), a_t.astype(np.float64) @ b)


@needs_mkl
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mkl_low_precision_gemm_equals_fp64_of_the_rounded_inputs(dtype, rng):
    from ndwork.kernels.precision import BF16, FP16, to_low, widen

    low = BF16 if dtype == "bf16" else FP16
    a, b = (to_low(x, low) for x in _operands(200, 96, 130))
    want = widen(a).astype(np.float64) @ widen(b).astype(np.float64)
    for left, right in ((a, b), (np.ascontiguousarray(a.T).T, b)):
        assert_close_f32(gemm.mkl_matmul(left, right), want)
