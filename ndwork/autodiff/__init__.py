"""Reverse-mode autodiff over coarse ops (micrograd's idea at the scale of whole layers).

`Tensor` records how it was made; `backward` walks the graph once in reverse
topological order. Each op in `ops.py` defines its forward and its backward side by
side and takes its kernels from the active `Optimizations`.
"""

from ndwork.autodiff.tensor import Parameters, Tensor, backward

__all__ = ["Parameters", "Tensor", "backward"]
