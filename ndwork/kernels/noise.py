"""Dropout masks from a counter-based hash: the same bits on every process, in both paths.

Each row of a mask has its own 64-bit key; element j of the row draws
splitmix64(key + j * golden) and keeps the element when its top 24 bits, as a
fraction of 2**24, are at least p. Integer arithmetic only, so the numba kernel and
the numpy reference give bit-identical masks.
"""

import numpy as np

from ndwork.kernels._jit import jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wraps modulo 2**64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def dropout_keep_reference(row_keys: np.ndarray, width: int, p: float, dtype) -> np.ndarray:
    """(rows, width) inverted-dropout factors: 0 where dropped, 1 / (1 - p) where kept."""
    counters = row_keys[:, None] + np.arange(width, dtype=np.uint64) * _GOLDEN
    threshold = np.uint64(int(round(p * 2**24)))
    keep = (mix64(counters) >> _S40) >= threshold
    return keep.astype(dtype) / dtype.type(1 - p)


@jit
def _dropout_keep(row_keys, threshold, scale, out):
    rows, width = out.shape
    for r in range(rows):
        key = row_keys[r]
        for j in range(width):
            z = key + np.uint64(j) * _GOLDEN
            z = (z ^ (z >> _S30)) * _M1
            z = (z ^ (z >> _S27)) * _M2
            z = z ^ (z >> _S31)
            out[r, j] = scale if (z >> _S40) >= threshold else 0


def dropout_keep(row_keys: np.ndarray, width: int, p: float, dtype) -> np.ndarray:
    out = np.empty((len(row_keys), width), dtype=dtype)
    _dropout_keep(row_keys, np.uint64(int(round(p * 2**24))), dtype.type(1 / dtype.type(1 - p)),
                  out)
    return out


KERNELS = {"dropout_keep": (dropout_keep, dropout_keep_reference)}
