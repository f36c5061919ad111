"""The one numba configuration of ndwork's kernels.

cache=True: compiled code is kept on disk, so only the first run compiles.
error_model="numpy": division by zero gives inf/nan instead of raising, which is what
lets LLVM vectorize loops that divide (the Python model adds a branch per division).
fastmath: reassociation (vectorized sums), contraction and approximate functions, but
not LLVM's `nnan`/`ninf` flags: with those, the compiler may assume no NaN or inf and
turn a NaN into a finite number, which would hide a diverging run from the trainer.
Every kernel propagates NaN and inf as its numpy reference does (tests/test_nonfinite.py).
Kernels that need IEEE-exact arithmetic (max/min with -inf/+inf sentinels) use
`jit_exact`.
nogil: kernels release the GIL, so thread-parallel work (cross-validation folds, grid
trials on `parallel="threads"`) overlaps in them.
"""

import functools

import numba as nb

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}  # all of LLVM's fast but nnan, ninf
jit = functools.partial(nb.njit, cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True)
jit_exact = functools.partial(nb.njit, cache=True, error_model="numpy", nogil=True)
# parallel kernels: prange loops on numba's threads (tbb: concurrent launches are safe)
jit_parallel = functools.partial(nb.njit, parallel=True, cache=True, fastmath=FASTMATH,
                                 error_model="numpy", nogil=True)
