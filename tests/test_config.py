"""The one configuration object and its context manager."""

import threading

import numba
import pytest
from threadpoolctl import threadpool_info

import ndwork
from ndwork.config import active
from ndwork.kernels import compiled, kernel, reference


def test_context_switches_kernels_and_restores():
    assert active().kernels == "numba"
    assert kernel("relu_forward") is compiled("relu_forward")
    with ndwork.optimizations(kernels="numpy") as opts:
        assert opts.kernels == "numpy" and active() is opts
        assert kernel("relu_forward") is reference("relu_forward")
    assert kernel("relu_forward") is compiled("relu_forward")


def test_threads_set_numba_and_blas_together():
    before = numba.get_num_threads()
    with ndwork.optimizations(threads=1):
        assert numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert numba.get_num_threads() == before


def test_configuration_is_per_thread():
    seen = {}

    def worker():
        seen["kernels"] = active().kernels

    with ndwork.optimizations(kernels="numpy"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["kernels"] == "numba"


def test_precision_policy():
    assert ndwork.Optimizations().dtypes.compute == "float32"
    with pytest.raises(ValueError, match="precision='bf16' is not known"):
        ndwork.Optimizations(precision="bf16")
