"""The randomness of one training forward, a pure function of (seed, step, window).

Dropout masks are keyed on each window's position in the step's global batch, so no
mask travels between processes and a window's mask is the same whichever rank holds
it: data-parallel training with dropout equals training in one process. Other draws
(Informer's query sample, shared by the whole batch) depend on (seed, step) alone,
so every rank draws the same.
"""

from __future__ import annotations

import numpy as np

from ndwork.kernels import kernel
from ndwork.kernels.noise import mix64


class TrainingNoise:
    """Passed as `rng` to a model's training forward; a model's forward is given None in
    inference. `windows`: each window's position in the step's global batch."""

    def __init__(self, seed: int, step: int, windows: np.ndarray):
        self.seed, self.step = int(seed), int(step)
        self.windows = np.asarray(windows, dtype=np.uint64)
        self._draws = 0

    def _next_key(self) -> np.uint64:
        """A key per draw: the forward's draws come in a fixed order."""
        self._draws += 1
        key = mix64(np.array([self.seed], dtype=np.uint64))  # arrays: uint64 wraps silently
        for word in (self.step, self._draws):
            key = mix64(key ^ np.uint64(word))
        return key[0]

    def _row_keys(self, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """A key per row of an array whose leading axis runs over the windows,
        window-major (each window's rows together), and the row's width."""
        rows = shape[0]
        if rows % len(self.windows):
            raise ValueError(f"random draws over an array of {rows} rows: not a multiple of "
                             f"the batch's {len(self.windows)} windows (window-major).")
        per_window = rows // len(self.windows)
        row_ids = (self.windows[:, None] * np.uint64(per_window)
                   + np.arange(per_window, dtype=np.uint64)).reshape(-1)
        return mix64(row_ids ^ self._next_key()), int(np.prod(shape[1:], dtype=np.int64))

    def dropout_keep(self, shape: tuple[int, ...], p: float, dtype) -> np.ndarray:
        """Inverted-dropout factors (0 or 1 / (1 - p)) of a window-major array."""
        keys, width = self._row_keys(shape)
        return kernel("dropout_keep")(keys, width, p, np.dtype(dtype)).reshape(shape)

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform [0, 1) draws (float64) of a window-major array, keyed like dropout's."""
        keys, width = self._row_keys(shape)
        cells = mix64(keys[:, None] ^ mix64(np.arange(width, dtype=np.uint64))[None, :])
        return ((cells >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape)

    def coin(self, p: float) -> bool:
        """True with probability p, one toss for the whole batch (the same on every rank)."""
        return bool(np.random.default_rng(int(self._next_key())).random() < p)

    def integers(self, low: int, high: int, size) -> np.ndarray:
        """Integers shared by the whole batch (the same on every rank)."""
        return np.random.default_rng(int(self._next_key())).integers(low, high, size)
