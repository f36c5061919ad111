"""The one numba configuration of ndwork's kernels.

cache=True: compiled code is kept on disk, so only the first run compiles.
error_model="numpy": division by zero gives inf/nan instead of raising, which is what
lets LLVM vectorize loops that divide (the Python model adds a branch per division).
fastmath: reassociation and no NaN/inf checks; kernels that rely on infinities
(max/min with -inf/+inf sentinels) use `jit_exact` instead.
nogil: kernels release the GIL, so thread-parallel work (cross-validation folds, grid
trials on `parallel="threads"`) overlaps in them.
"""

import functools

import numba as nb

jit = functools.partial(nb.njit, cache=True, fastmath=True, error_model="numpy", nogil=True)
jit_exact = functools.partial(nb.njit, cache=True, error_model="numpy", nogil=True)
