"""Values derived from the weights alone (TimesNet's merged inception kernels): computed
once per version of the weights while forecasts run, and on every call in training,
where they must carry gradients and the weights change at every step.

A version of the weights is an array that is never changed in place
(`trainer.inference_weights` makes one per optimizer step and registers it here); a
forward over any other array, the training's own included, memoizes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")

_MEMOS: dict[int, tuple[weakref.ref, dict]] = {}
_ACTIVE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("weights_memo",
                                                                     default=None)


def register(weights: np.ndarray) -> None:
    """Let forecasts over `weights` keep what they derive from it, for as long as it
    lives. The caller promises never to change it in place."""
    key = id(weights)
    memos = _MEMOS  # (bound here: at interpreter exit the module's globals are gone)
    memos[key] = (weakref.ref(weights, lambda _: memos.pop(key, None)), {})


@contextlib.contextmanager
def forecasting(weights: np.ndarray) -> Iterator[None]:
    """Within, `derived` keeps its values for `weights` if that array is registered."""
    entry = _MEMOS.get(id(weights))
    token = _ACTIVE.set(entry[1] if entry is not None and entry[0]() is weights else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def derived(key: tuple, compute: Callable[[], T]) -> T:
    """compute(), or what it returned for `key` earlier in a forecast over the same
    version of the weights. key: unique within a model (a layer's name and what else
    the value depends on)."""
    memo = _ACTIVE.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]
