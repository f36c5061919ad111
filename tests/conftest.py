import os
import tempfile

import numpy as np
import pytest

# The tests measure GEMM choices on a busy machine: keep them out of the user's cache
# (dask workers the tests start inherit this).
os.environ["NDWORK_CACHE_DIR"] = tempfile.mkdtemp(prefix="ndwork-test-cache-")

# Kernel tolerance of the issue: max|x - ref| <= RTOL_F32 * max|ref| per tensor.
RTOL_F32 = 1e-5
# Finite differences in float64: central differences with this step and tolerance.
FD_EPS = 1e-6
FD_RTOL = 1e-5


def assert_close_f32(x, ref, rtol=RTOL_F32, atol=0.0):
    """max|x - ref| <= rtol * max|ref| (+ atol, for tensors that are zero in exact math)."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    assert x.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-30) if ref.size else 1.0
    err = np.abs(x - ref).max() if ref.size else 0.0
    assert err <= rtol * scale + atol, f"max error {err:.3g} > {rtol} * {scale:.3g} + {atol}"


def assert_loss_gradient(run, params: np.ndarray, checked: int = 30, seed: int = 1,
                         rtol: float = 1e-4):
    """run(flat parameters) -> (loss, gradient): the gradient at `checked` random
    parameters against float64 central differences (step FD_EPS)."""
    _, grads = run(params)
    for i in np.random.default_rng(seed).choice(params.size, checked, replace=False):
        up, down = params.copy(), params.copy()
        up[i] += FD_EPS
        down[i] -= FD_EPS
        numeric = (run(up)[0] - run(down)[0]) / (2 * FD_EPS)
        assert grads[i] == pytest.approx(numeric, rel=rtol, abs=1e-7), f"parameter {i}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def client():
    """A real dask LocalCluster (2 single-threaded worker processes on 127.0.0.1)."""
    pytest.importorskip("distributed")
    from ndwork.distributed import connect

    with connect(2) as dask_client:
        yield dask_client


def exog_options(cls, lists: dict) -> dict:
    """The exogenous lists of `lists` ({"futr_exog_list": [...], ...}) the model class
    takes (its EXOGENOUS_* flags)."""
    return {f"{kind}_exog_list": lists[f"{kind}_exog_list"] for kind in ("futr", "hist", "stat")
            if f"{kind}_exog_list" in lists and getattr(cls, f"EXOGENOUS_{kind.upper()}")}
