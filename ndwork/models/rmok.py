"""RMoK: reversible mixture of KAN experts, one gated mixture per series' window."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn.kan import WAVELETS, KANExperts
from ndwork.nn.multivariate import RevIN, series_last, series_outputs


class RMoK(BaseModel):
    """NeuralForecast's RMoK, multivariate: n_series aligned series, each window
    normalized by RevIN, mapped to the horizon by a softmax-gated mixture of a Taylor
    KAN (taylor_order), a Jacobi KAN (jacobi_degree), a wavelet KAN (wavelet_function:
    mexican_hat, morlet, dog, meyer or shannon) and a Linear, then denormalized.

    dropout (on the normalized inputs), revin_affine (RevIN's learnt affine map).
    Training options: see `BaseModel`.
    """

    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, taylor_order: int = 3,
                 jacobi_degree: int = 6, wavelet_function: str = "mexican_hat",
                 dropout: float = 0.1, revin_affine: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if wavelet_function not in WAVELETS:
            raise ValueError(f"wavelet_function={wavelet_function!r} is not one of "
                             f"NeuralForecast's {list(WAVELETS)}.")
        self.n_series = n_series_option(n_series)
        self.taylor_order, self.jacobi_degree = taylor_order, jacobi_degree
        self.wavelet_function, self.dropout, self.revin_affine = wavelet_function, dropout, revin_affine
        self.mixture = KANExperts(self.spec, input_size, h * self.n_outputs, taylor_order,
                                  jacobi_degree, wavelet_function)
        self.rev = RevIN(self.spec, "rev", self.n_series, affine=revin_affine)

    def forward(self, p, batch, rng=None):
        n, length = self.n_series, self.input_size
        x, stats = self.rev.norm(p, series_last(batch["insample_y"], n))  # (W, L, N)
        w = x.shape[0]
        x = ops.reshape(ops.transpose(ops.dropout(x, self.dropout, rng), (0, 2, 1)),
                        (w * n, length))
        y = ops.reshape(self.mixture(p, x, rng is not None), (w, n, -1))
        y = self.rev.denorm(p, ops.transpose(y, (0, 2, 1)), stats)  # (W, h * Q, N)
        return series_outputs(ops.reshape(y, (w, self.h, -1)), n, self.n_outputs)
