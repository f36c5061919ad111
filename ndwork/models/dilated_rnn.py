"""DilatedRNN: groups of dilated recurrent layers with a residual connection around every
group after the first, a linear context adapter from input_size to h steps, and an MLP
decoder (NeuralForecast's DilatedRNN, after Chang et al., 2017)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.models.rnn import check_positive, sequence_inputs
from ndwork.nn import Linear, MLPDecoder, RecurrentStack

CELLS = {"RNN": "rnn_tanh", "LSTM": "lstm", "GRU": "gru"}
NOT_BUILT = ("ResLSTM", "AttentiveLSTM")


def dilated(layer: RecurrentStack, p, x: ops.Tensor, rate: int) -> ops.Tensor:
    """A recurrent layer at dilation `rate` over x (T, B, C), time-major: step t follows
    step t - rate. The sequence, zero-padded at the end to a multiple of rate, becomes
    `rate` interleaved sub-sequences side by side in the batch (NeuralForecast's DRNN)."""
    t, b, c = x.shape
    padded = -(-t // rate) * rate
    if padded > t:
        x = ops.concat([x, ops.constant(np.zeros((padded - t, b, c), x.data.dtype))], axis=0)
    x = ops.reshape(x, (padded // rate, rate * b, c))  # sub-sequence j: steps j, j + r, ...
    y = layer.run_time_major(p, x)
    y = ops.reshape(y, (padded, b, y.shape[2]))
    return ops.index(y, (slice(0, t),)) if padded > t else y


class DilatedRNN(BaseModel):
    """DilatedRNN (NeuralForecast's).

    cell_type: "RNN", "LSTM" or "GRU" ("ResLSTM" and "AttentiveLSTM" are not built yet).
    dilations: one list of rates per group of layers, e.g. [[1, 2], [4, 8]]; every group
    after the first adds its input back (residual). encoder_hidden_size: units per layer.
    context_size is accepted and unused, as in NeuralForecast. decoder_hidden_size,
    decoder_layers, decoder_activation (default "ReLU"): the MLP decoder. input_size: -1
    means 3 * h. Training options: see `BaseModel` (num_lr_decays defaults to 3 here).
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = True
    INPUT_SIZE_FROM_HORIZON = True
    DEFAULTS = dict(windows_batch_size=128, inference_windows_batch_size=1024,
                    scaler_type="robust", num_lr_decays=3)

    def __init__(self, h: int, input_size: int = -1, inference_input_size=None,
                 cell_type: str = "LSTM", dilations: list[list[int]] | None = None,
                 encoder_hidden_size: int = 128, context_size: int = 10,
                 decoder_hidden_size: int = 128, decoder_layers: int = 2,
                 decoder_activation: str | None = None, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.inference_input_size, self.cell_type = inference_input_size, cell_type
        self.dilations = [list(g) for g in (dilations if dilations is not None
                                            else [[1, 2], [4, 8]])]
        self.encoder_hidden_size, self.context_size = encoder_hidden_size, context_size
        self.decoder_hidden_size, self.decoder_layers = decoder_hidden_size, decoder_layers
        self.decoder_activation = decoder_activation
        if cell_type in NOT_BUILT:
            raise ValueError(f"DilatedRNN(cell_type={cell_type!r}) is not built in ndwork yet; "
                             f"use one of {list(CELLS)}.")
        if cell_type not in CELLS:
            raise ValueError(f"DilatedRNN: cell_type={cell_type!r} is not known; use one of "
                             f"{list(CELLS)}.")
        check_positive(self, "encoder_hidden_size", "decoder_layers")
        rates = [r for group in self.dilations for r in group]
        if not all(self.dilations) or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                                          for r in rates):
            raise ValueError(f"DilatedRNN: dilations={self.dilations!r} must be non-empty lists "
                             f"of positive integers, e.g. [[1, 2], [4, 8]].")
        if max(rates) >= self.input_size:
            raise ValueError(f"DilatedRNN: dilation {max(rates)} leaves no recurrence within "
                             f"input_size={self.input_size}; use dilations below input_size.")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.groups = []
        for g, group in enumerate(self.dilations):
            layers = []
            for i, _ in enumerate(group):
                fan_in = channels if g == 0 and i == 0 else encoder_hidden_size
                layers.append(RecurrentStack(self.spec, f"rnn_stack.{g}.cells.{i}",
                                             CELLS[cell_type], fan_in, encoder_hidden_size, 1))
            self.groups.append(layers)
        self.context_adapter = Linear(self.spec, "context_adapter", self.input_size, h)
        self.decoder = MLPDecoder(self.spec, "mlp_decoder",
                                  encoder_hidden_size + self.futr_exog_size, self.n_outputs,
                                  decoder_hidden_size, decoder_layers,
                                  activation_name(decoder_activation or "ReLU"))

    def forward(self, p, batch, rng=None):
        x = ops.transpose(sequence_inputs(batch, self.input_size), (1, 0, 2))  # (L, B, C)
        for g, (layers, rates) in enumerate(zip(self.groups, self.dilations, strict=True)):
            residual = x
            for layer, rate in zip(layers, rates, strict=True):
                x = dilated(layer, p, x, rate)
            if g:
                x = ops.add(x, residual)
        # over time: (B, H, L) -> (B, H, h) -> (B, h, H)
        context = ops.transpose(self.context_adapter(p, ops.transpose(x, (1, 2, 0))), (0, 2, 1))
        if batch["futr_exog"] is not None:
            context = ops.concat([context, ops.constant(batch["futr_exog"][:, self.input_size:])],
                                 axis=2)
        return self.decoder(p, context)
