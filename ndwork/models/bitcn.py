"""BiTCN: a backward-looking (causal) dilated convolution network over the input window
and, with future exogenous inputs, a forward-looking one over the window and the horizon
(NeuralForecast's BiTCN, after Sprangers et al., 2023)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.models.rnn import check_positive, sequence_inputs
from ndwork.nn import Linear, ParameterSpec

KERNEL_SIZE = 2  # fixed in NeuralForecast's BiTCN


class TCNCell:
    """NeuralForecast's TCNCell: a dilated Conv1d (k=2) and GELU, then a 1x1 Conv1d to twice
    the channels, split into the next residual state and a skip output. "backward" pads on
    the left (causal), "forward" on the right (looks ahead)."""

    def __init__(self, spec: ParameterSpec, name: str, channels: int, dilation: int, mode: str,
                 dropout: float):
        bound = 1 / np.sqrt(channels * KERNEL_SIZE)
        self.weight = spec.add(f"{name}.conv1.weight", (KERNEL_SIZE, channels, channels),
                               "uniform", bound)
        self.bias = spec.add(f"{name}.conv1.bias", (channels,), "uniform", bound)
        # NeuralForecast's 1x1 Conv1d to 2C channels, then split in two: the same as two
        # C -> C maps (its weight's first C rows and its last C rows), without the split
        self.to_state = Linear(spec, f"{name}.conv2.state", channels, channels)
        self.to_skip = Linear(spec, f"{name}.conv2.skip", channels, channels)
        self.dilation, self.mode, self.dropout = dilation, mode, dropout

    def __call__(self, p, state: ops.Tensor, out: ops.Tensor | None, rng):
        """state (B, T, C) -> (state + next, out + skip)."""
        if self.mode == "backward":
            y = ops.causal_conv1d(state, p[self.weight], p[self.bias], self.dilation)
        else:  # looking ahead = the causal convolution of the reversed sequence
            y = ops.flip(ops.causal_conv1d(ops.flip(state, 1), ops.flip(p[self.weight], 0),
                                           p[self.bias], self.dilation), 1)
        y = ops.dropout(ops.activation(y, "gelu"), self.dropout, rng)
        skip = self.to_skip(p, y)
        return ops.add(state, self.to_state(p, y)), skip if out is None else ops.add(out, skip)


def _layers_to_cover(length: int) -> int:
    """Dilations 1, 2, 4, ... until a k=2 stack sees `length` steps."""
    return int(np.ceil(np.log2((length - 1) / (KERNEL_SIZE - 1) + 1)))


class BiTCN(BaseModel):
    """BiTCN (NeuralForecast's).

    hidden_size: channels of the convolutions. dropout: after each cell's GELU and after
    the input projections. The backward stack has enough layers (dilations 1, 2, 4, ...)
    to see the whole input window; with futr_exog_list a forward stack also runs over the
    window and the horizon. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    DEFAULTS = dict(windows_batch_size=1024, inference_windows_batch_size=1024,
                    scaler_type="identity")

    def __init__(self, h: int, input_size: int, hidden_size: int = 16, dropout: float = 0.5,
                 **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.hidden_size, self.dropout = hidden_size, dropout
        check_positive(self, "hidden_size")
        if not 0 <= dropout < 1:
            raise ValueError(f"BiTCN: dropout={dropout!r} must be in [0, 1).")
        if self.input_size < 2:
            raise ValueError("BiTCN needs input_size >= 2 (its convolutions have kernel size 2).")
        spec = self.spec
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.lin_hist = Linear(spec, "lin_hist", channels, hidden_size)
        self.net_bwd = [TCNCell(spec, f"net_bwd.{i}", hidden_size, 2**i, "backward", dropout)
                        for i in range(_layers_to_cover(self.input_size))]
        outputs = 1
        if self.futr_exog_size:
            self.lin_futr = Linear(spec, "lin_futr", self.futr_exog_size, hidden_size)
            self.net_fwd = [TCNCell(spec, f"net_fwd.{i}", hidden_size, 2**i, "forward", dropout)
                            for i in range(_layers_to_cover(self.input_size + h))]
            outputs += 2
        self.temporal_lin1 = Linear(spec, "temporal_lin1", self.input_size, hidden_size)
        self.temporal_lin2 = Linear(spec, "temporal_lin2", hidden_size, h)
        self.output_lin = Linear(spec, "output_lin", outputs * hidden_size, self.n_outputs)

    @staticmethod
    def _stack(p, cells, x, rng):
        out = None
        for cell in cells:
            x, out = cell(p, x, out, rng)
        return out

    def forward(self, p, batch, rng=None):
        L = self.input_size
        x = ops.dropout(self.lin_hist(p, sequence_inputs(batch, L)), self.dropout, rng)
        x = self._stack(p, self.net_bwd, x, rng)  # (B, L, C): the skip outputs' sum
        if self.futr_exog_size:
            futr = ops.dropout(self.lin_futr(p, ops.as_tensor(batch["futr_exog"])), self.dropout,
                               rng)
            futr = self._stack(p, self.net_fwd, futr, rng)  # (B, L + h, C)
            x = ops.concat([x, ops.index(futr, (slice(None), slice(0, L)))], axis=2)
        # over time: (B, channels, L) -> (B, channels, hidden) -> (B, channels, h)
        x = ops.transpose(x, (0, 2, 1))
        x = ops.dropout(ops.activation(self.temporal_lin1(p, x), "gelu"), self.dropout, rng)
        x = ops.transpose(self.temporal_lin2(p, x), (0, 2, 1))  # (B, h, channels)
        if self.futr_exog_size:
            x = ops.concat([x, ops.index(futr, (slice(None), slice(L, None)))], axis=2)
        return self.output_lin(p, x)
