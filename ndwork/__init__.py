"""ndwork: neural time-series forecasting on the CPU, NeuralForecast's API."""

__version__ = "0.1.0"

from ndwork.config import Optimizations, optimizations  # noqa: E402
from ndwork.core import NeuralForecast  # noqa: E402
from ndwork.kernels.gemm import PrecisionFallbackWarning  # noqa: E402
from ndwork.profiling import profile  # noqa: E402

__all__ = ["NeuralForecast", "Optimizations", "PrecisionFallbackWarning", "__version__",
           "optimizations", "profile"]
