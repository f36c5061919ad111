"""StemGNN: a latent correlation graph learnt from the windows, then spectral graph
convolutions (graph Fourier transform by Chebyshev polynomials of its Laplacian, a
discrete Fourier transform, gated linear units, the inverse transforms)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import Linear, RecurrentStack
from ndwork.nn.multivariate import series_last, series_outputs

CHEBYSHEV_ORDERS = 4


def leaky_relu(x, slope: float):
    return ops.maximum(x, ops.mul(x, ops.constant(np.asarray(slope, x.data.dtype))))


class GLU:
    def __init__(self, spec, name, in_features, out_features):
        self.left = Linear(spec, f"{name}.linear_left", in_features, out_features)
        self.right = Linear(spec, f"{name}.linear_right", in_features, out_features)

    def __call__(self, p, x):
        return ops.mul(self.left(p, x), self.right(p, x, "sigmoid"))


class StockBlockLayer:
    """One StemGNN block on x (W, 1, N, L) with the Chebyshev graph operators (4, N, N):
    graph Fourier transform, a DFT over the 4 orders, three GLUs on its real and
    imaginary parts (widening 4L to 4 * multi * L), the inverse DFT, a learnt graph
    convolution per order (weight (4, mL, mL)), then forecast and (first block) backcast
    heads."""

    def __init__(self, spec, name, time_step, multi, first: bool):
        width = time_step * multi
        # xavier_normal_ of torch's (1, 4, 1, mL, mL): fan_in 4 mL², fan_out mL²
        std = np.sqrt(2.0 / ((CHEBYSHEV_ORDERS + 1) * width * width))
        self.weight = spec.add(f"{name}.weight", (CHEBYSHEV_ORDERS, width, width), "normal", std)
        self.forecast = Linear(spec, f"{name}.forecast", width, width)
        self.forecast_result = Linear(spec, f"{name}.forecast_result", width, time_step)
        self.backcast = Linear(spec, f"{name}.backcast", width, time_step) if first else None
        self.backcast_short_cut = Linear(spec, f"{name}.backcast_short_cut", time_step, time_step)
        channels = 4 * multi
        sizes = [(time_step * 4, time_step * channels)] * 2 + \
            [(time_step * channels, time_step * channels)] * 4
        self.glus = [GLU(spec, f"{name}.GLUs.{i}", a, b) for i, (a, b) in enumerate(sizes)]
        self.time_step, self.multi = time_step, multi

    def spectral(self, p, x):
        """(W, 4, N, L) -> (W, 4, N, mL): DFT over the orders, GLUs, inverse DFT."""
        w, k, n, length = x.shape
        spectrum = ops.fft(x, axis=1)  # (W, 4, N, L, 2)
        parts = []
        for part in (0, 1):  # real, imaginary
            z = ops.index(spectrum, (Ellipsis, part))
            z = ops.reshape(ops.transpose(z, (0, 2, 1, 3)), (w, n, -1))
            for i in range(3):
                z = self.glus[2 * i + part](p, z)
            z = ops.transpose(ops.reshape(z, (w, n, 4, -1)), (0, 2, 1, 3))  # (W, 4, N, mL)
            parts.append(ops.reshape(z, (*z.shape, 1)))
        return ops.irfft(ops.concat(parts, axis=-1), n=k, axis=1)

    def __call__(self, p, x, operators):
        gfted = ops.matmul(operators, x)  # (4, N, N) @ (W, 1, N, L) -> (W, 4, N, L)
        convolved = ops.matmul(self.spectral(p, gfted), p[self.weight])  # per order
        igfted = ops.total(convolved, axis=1)  # (W, N, mL)
        forecast = self.forecast_result(p, self.forecast(p, igfted, "sigmoid"))
        if self.backcast is None:
            return forecast, None
        short = self.backcast_short_cut(p, ops.reshape(x, (x.shape[0], *x.shape[2:])))
        backcast = ops.activation(ops.sub(self.backcast(p, igfted), short), "sigmoid")
        return forecast, ops.reshape(backcast, x.shape)


class StemGNN(BaseModel):
    """StemGNN (Cao et al., 2020), multivariate: n_series aligned series.

    The graph: a GRU reads the series as a sequence (each step one series' window),
    self-attention with leaky_rate (LeakyReLU slope) and dropout_rate over its states
    gives the adjacency (averaged over the batch's windows), whose normalized Laplacian's
    Chebyshev polynomials feed n_stacks (2, NeuralForecast's only choice) spectral
    blocks of width multi_layer * input_size. Training options: see `BaseModel`.
    """

    MULTIVARIATE = True
    DEFAULTS = dict(windows_batch_size=32, inference_windows_batch_size=32,
                    scaler_type="robust", num_lr_decays=3)

    def __init__(self, h: int, input_size: int, n_series: int, n_stacks: int = 2,
                 multi_layer: int = 5, dropout_rate: float = 0.5, leaky_rate: float = 0.2,
                 **kwargs):
        super().__init__(h, input_size, **kwargs)
        if n_stacks != 2:
            raise ValueError(f"StemGNN(n_stacks={n_stacks}): NeuralForecast's StemGNN has "
                             f"exactly 2 stacks; leave n_stacks at 2.")
        self.n_series = n = n_series_option(n_series)
        self.n_stacks, self.multi_layer = n_stacks, multi_layer
        self.dropout_rate, self.leaky_rate = dropout_rate, leaky_rate
        spec = self.spec
        bound = 1.414 * np.sqrt(6.0 / (n + 1))  # xavier_uniform_ of (N, 1), gain 1.414
        self.weight_key = spec.add("weight_key", (n,), "uniform", bound)
        self.weight_query = spec.add("weight_query", (n,), "uniform", bound)
        self.gru = RecurrentStack(spec, "GRU", "gru", input_size, n, 1)
        self.stock_block = [StockBlockLayer(spec, f"stock_block.{i}", input_size, multi_layer,
                                            first=i == 0) for i in range(n_stacks)]
        self.fc_hidden = Linear(spec, "fc.0", input_size, input_size)
        self.fc_out = Linear(spec, "fc.2", input_size, h * self.n_outputs)

    def graph(self, p, x, rng):
        """x (W, L, N) -> the Chebyshev operators (4, N, N) of the learnt graph."""
        n = self.n_series
        states = self.gru.run_time_major(p, ops.transpose(x, (2, 0, 1)))  # (N, W, N)
        states = ops.transpose(states, (1, 2, 0))  # (W, hidden, series)
        key = ops.matmul(states, ops.reshape(p[self.weight_key], (n, 1)))  # (W, N, 1)
        query = ops.matmul(states, ops.reshape(p[self.weight_query], (n, 1)))
        scores = leaky_relu(ops.add(key, ops.transpose(query, (0, 2, 1))), self.leaky_rate)
        attention = ops.dropout(ops.activation(scores, "softmax"), self.dropout_rate, rng)
        attention = ops.reshape(ops.mean(attention, axis=0), (n, n))
        degree = ops.total(attention, axis=1)
        dtype = x.data.dtype
        symmetric = ops.mul(ops.add(attention, ops.transpose(attention, (1, 0))),
                            ops.constant(np.asarray(0.5, dtype)))
        eye = ops.constant(np.eye(n, dtype=dtype))
        scale = ops.divide(ops.constant(np.ones(n, dtype)),
                           ops.add(ops.sqrt(degree), ops.constant(np.asarray(1e-7, dtype))))
        laplacian = ops.sub(ops.mul(eye, ops.reshape(degree, (n, 1))), symmetric)
        laplacian = ops.mul(ops.mul(laplacian, ops.reshape(scale, (n, 1))), scale)
        two = ops.constant(np.asarray(2.0, dtype))
        second = ops.mul(two, ops.matmul(laplacian, laplacian))
        third = ops.sub(ops.mul(two, ops.matmul(laplacian, second)), laplacian)
        orders = [ops.constant(np.zeros((n, n), dtype)), laplacian, second, third]
        return ops.concat([ops.reshape(t, (1, n, n)) for t in orders], axis=0)

    def forward(self, p, batch, rng=None):
        n = self.n_series
        x = series_last(batch["insample_y"], n)  # (W, L, N)
        w = x.shape[0]
        operators = self.graph(p, x, rng)
        blocks = ops.reshape(ops.transpose(x, (0, 2, 1)), (w, 1, n, self.input_size))
        forecasts = []
        for block in self.stock_block:
            forecast, blocks = block(p, blocks, operators)
            forecasts.append(forecast)
        y = leaky_relu(self.fc_hidden(p, ops.add(*forecasts)), 0.01)
        y = ops.transpose(self.fc_out(p, y), (0, 2, 1))  # (W, h * Q, N)
        return series_outputs(ops.reshape(y, (w, self.h, -1)), n, self.n_outputs)
