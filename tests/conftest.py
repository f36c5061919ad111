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
