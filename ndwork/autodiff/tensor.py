"""The tensor, the backward pass, and the flat parameter store."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ndwork.config import active
from ndwork.kernels.precision import widen


class Tensor:
    """An array plus how to send its gradient back to the tensors it came from.

    `stored` is the array as kept: under mixed precision a hidden layer's activations
    are kept in bfloat16 or float16 (half the memory a graph holds for its backward).
    `data` is it in the compute dtype: what every op reads, unless it can take the
    stored precision directly (a linear layer's GEMM)."""

    __slots__ = ("stored", "grad", "parents", "backward_fn", "requires_grad", "owns_grad")

    def __init__(self, data: np.ndarray, parents: Sequence[Tensor] = (),
                 backward_fn: Callable[[np.ndarray], Sequence[np.ndarray | None]] | None = None,
                 requires_grad: bool = False):
        self.stored = data
        self.grad: np.ndarray | None = None
        self.owns_grad = False  # grad was allocated here: later gradients add in place
        self.parents = tuple(parents)
        self.backward_fn = backward_fn
        if not requires_grad:  # (a loop: every op of a forward creates one)
            for parent in self.parents:
                if parent.requires_grad:
                    requires_grad = True
                    break
        self.requires_grad = requires_grad

    @property
    def data(self) -> np.ndarray:
        stored = self.stored
        return widen(stored) if stored.itemsize == 2 else stored

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.stored = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    def accumulate(self, grad: np.ndarray | Slice) -> None:
        """Add a gradient: kept as it comes when it is the first (often another tensor's
        gradient passed through: never written to), else summed into an array this
        tensor owns."""
        if isinstance(grad, Slice):
            if self.grad is None:
                self.grad = np.zeros(self.shape, grad.value.dtype)
            elif not self.owns_grad:
                self.grad = self.grad.copy()
            self.owns_grad = True
            self.grad[grad.key] += grad.value
        elif self.grad is None:
            self.grad = grad
        elif self.owns_grad and self.grad.shape == grad.shape and self.grad.dtype == grad.dtype:
            self.grad += grad
        else:
            self.grad, self.owns_grad = self.grad + grad, True

    def __repr__(self) -> str:
        return f"Tensor(shape={self.stored.shape}, dtype={self.stored.dtype})"


class Slice:
    """A gradient that is zero outside x[key] (what basic slicing sends back), added
    into x's gradient in place: the pieces of a tensor cost one full-size array between
    them, not one each."""

    __slots__ = ("key", "value")

    def __init__(self, key, value: np.ndarray):
        self.key, self.value = key, value

    @property
    def nbytes(self) -> int:
        return self.value.nbytes


def backward(root: Tensor, seed: np.ndarray | float = 1.0) -> None:
    """Accumulate d root / d t into t.grad for every tensor t that requires a gradient."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack = [(root, False)]
    while stack:  # iterative DFS: deep stacks of blocks must not hit Python's recursion limit
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen or not node.requires_grad:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents)
    root.grad = np.asarray(seed, dtype=root.data.dtype) * np.ones_like(root.data)
    for node in reversed(order):
        if node.backward_fn is None or node.grad is None:
            continue
        for parent, grad in zip(node.parents, node.backward_fn(node.grad), strict=True):
            if grad is not None and parent.requires_grad:
                parent.accumulate(grad)
        if node.parents:
            node.grad = None  # free intermediate gradients as soon as they are used


class Parameters:
    """All trainable arrays of a model in one flat vector, with named views into it.

    One flat vector makes the optimizer a single fused kernel call, checkpoints a
    single array, and a data-parallel gradient average a single reduction.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype=None):
        self.shapes = dict(shapes)
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            self.offsets[name] = (start, start + size)
            start += size
        self.size = start
        self.dtype = np.dtype(dtype or active().dtypes.param)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[a:b].reshape(self.shapes[name]) for name, (a, b) in self.offsets.items()}

    def tensors(self, flat: np.ndarray) -> dict[str, Tensor]:
        return {name: Tensor(view, requires_grad=True) for name, view in self.views(flat).items()}

    def constants(self, flat: np.ndarray) -> dict[str, Tensor]:
        """Views of flat as tensors that take no gradient (inference): made once for the
        last flat array asked for (a forecast runs with the same one each call), and
        following it as it changes in place. From a bfloat16 flat (a forecast's weights,
        made once per optimizer step) the vectors are widened once here: only matrices
        stay low, for the dense layers to read as they are."""
        cached = getattr(self, "_constants", None)
        if cached is None or cached[0] is not flat:
            cached = (flat, {name: Tensor(view if view.ndim >= 2 else widen(view))
                             for name, view in self.views(flat).items()})
            self._constants = cached
        return cached[1]

    def gather_grads(self, tensors: dict[str, Tensor]) -> np.ndarray:
        """The gradients of `tensors` as one flat vector (zeros where none flowed)."""
        dtype = next(iter(tensors.values())).data.dtype if tensors else self.dtype
        grads = np.zeros(self.size, dtype=dtype)
        for name, (a, b) in self.offsets.items():
            grad = tensors[name].grad
            if grad is not None:
                grads[a:b] = grad.reshape(-1)
        return grads
