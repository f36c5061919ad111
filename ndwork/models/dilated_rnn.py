"""DilatedRNN: groups of dilated recurrent layers with a residual connection around every
group after the first, a linear context adapter from input_size to h steps, and an MLP
decoder (NeuralForecast's DilatedRNN, after Chang et al., 2017)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.models.rnn import check_positive, sequence_inputs
from ndwork.nn import ContextDecoder, Linear, RecurrentStack

CELLS = {"RNN": "rnn_tanh", "LSTM": "lstm", "GRU": "gru"}


class StepLayer:
    """A recurrent layer whose cell NeuralForecast writes step by step (ResLSTM,
    AttentiveLSTM): built from autodiff ops, one step at a time, time-major. Weights are
    drawn N(0, 1) as NeuralForecast draws them (torch.randn), stored transposed."""

    def __init__(self, spec, name: str, input_size: int, hidden_size: int):
        self.name, self.input_size, self.hidden_size = name, input_size, hidden_size

    def run_time_major(self, p, x: ops.Tensor) -> ops.Tensor:
        """x (T, B, I) -> every hidden state (T, B, H), from a zero state."""
        t, b, _ = x.shape
        zeros = ops.constant(np.zeros((b, self.hidden_size), x.data.dtype))
        h, c, outputs = zeros, zeros, []
        for s in range(t):
            h, c = self.step(p, x, ops.index(x, (s,)), h, c)
            outputs.append(ops.reshape(h, (1, b, self.hidden_size)))
        return ops.concat(outputs, axis=0)

    def step(self, p, x_all, x_t, h, c):
        raise NotImplementedError


def _chunk(x: ops.Tensor, k: int, parts: int) -> ops.Tensor:
    size = x.shape[-1] // parts
    return ops.index(x, (Ellipsis, slice(k * size, (k + 1) * size)))


class ResLSTMLayer(StepLayer):
    """NeuralForecast's ResLSTMCell: input, forget and output gates see the input, the
    hidden and the cell state; the new hidden state adds the input back (through
    weight_ir when the sizes differ)."""

    def __init__(self, spec, name, input_size, hidden_size):
        super().__init__(spec, name, input_size, hidden_size)
        prefix, h3 = f"{name}.cell", 3 * hidden_size
        self.w = {k: spec.add(f"{prefix}.{k}", shape, "normal", 1.0) for k, shape in (
            ("weight_ii", (input_size, h3)), ("weight_ic", (hidden_size, h3)),
            ("weight_ih", (hidden_size, h3)), ("bias_ii", (h3,)), ("bias_ic", (h3,)),
            ("bias_ih", (h3,)), ("weight_hh", (hidden_size, hidden_size)),
            ("bias_hh", (hidden_size,)), ("weight_ir", (input_size, hidden_size)))}

    def step(self, p, x_all, x_t, h, c):
        w = {k: p[v] for k, v in self.w.items()}
        ifo = ops.add(ops.add(ops.linear(x_t, w["weight_ii"], w["bias_ii"]),
                              ops.linear(h, w["weight_ih"], w["bias_ih"])),
                      ops.linear(c, w["weight_ic"], w["bias_ic"]))
        i, f, o = (ops.activation(_chunk(ifo, k, 3), "sigmoid") for k in range(3))
        g = ops.linear(h, w["weight_hh"], w["bias_hh"], "tanh")
        c = ops.add(ops.mul(f, c), ops.mul(i, g))
        skip = x_t if self.input_size == self.hidden_size else ops.linear(
            x_t, w["weight_ir"], None)
        return ops.mul(o, ops.add(ops.activation(c, "tanh"), skip)), c


class AttentiveLSTMLayer(StepLayer):
    """NeuralForecast's AttentiveLSTMLayer: at every step, attention over all the
    layer's inputs (scored from each input with the current hidden and cell state) forms
    the context an LSTM cell reads."""

    def __init__(self, spec, name, input_size, hidden_size):
        super().__init__(spec, name, input_size, hidden_size)
        g4 = 4 * hidden_size
        self.w = {k: spec.add(f"{name}.cell.{k}", shape, "normal", 1.0) for k, shape in (
            ("weight_ih", (input_size, g4)), ("weight_hh", (hidden_size, g4)),
            ("bias_ih", (g4,)), ("bias_hh", (g4,)))}
        self.score = Linear(spec, f"{name}.attn_layer.0", 2 * hidden_size + input_size,
                            hidden_size)
        self.weigh = Linear(spec, f"{name}.attn_layer.2", hidden_size, 1)

    def step(self, p, x_all, x_t, h, c):
        t, b, i_size = x_all.shape
        hidden = self.hidden_size
        weight = p[self.score.weight]  # rows: the input, then h, then c (their concat order)
        by_input = ops.linear(x_all, ops.index(weight, (slice(0, i_size),)), p[self.score.bias])
        by_state = ops.add(ops.linear(h, ops.index(weight, (slice(i_size, i_size + hidden),)),
                                      None),
                           ops.linear(c, ops.index(weight, (slice(i_size + hidden, None),)),
                                      None))
        scores = self.weigh(p, ops.activation(ops.add(by_input, by_state), "tanh"))  # (T, B, 1)
        beta = ops.activation(ops.transpose(ops.reshape(scores, (t, b)), (1, 0)), "softmax")
        context = ops.reshape(ops.matmul(ops.reshape(beta, (b, 1, t)),
                                         ops.transpose(x_all, (1, 0, 2))), (b, i_size))
        w = {k: p[v] for k, v in self.w.items()}
        gates = ops.add(ops.linear(context, w["weight_ih"], w["bias_ih"]),
                        ops.linear(h, w["weight_hh"], w["bias_hh"]))
        i, f, o = (ops.activation(_chunk(gates, k, 4), "sigmoid") for k in (0, 1, 3))
        g = ops.activation(_chunk(gates, 2, 4), "tanh")
        c = ops.add(ops.mul(f, c), ops.mul(i, g))
        return ops.mul(o, ops.activation(c, "tanh")), c


STEP_CELLS = {"ResLSTM": ResLSTMLayer, "AttentiveLSTM": AttentiveLSTMLayer}


def dilated(layer, p, x: ops.Tensor, rate: int) -> ops.Tensor:
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

    cell_type: "RNN", "LSTM", "GRU" (sequence kernels), "ResLSTM" or "AttentiveLSTM"
    (NeuralForecast's step-by-step cells, built from autodiff ops: slower).
    dilations: one list of rates per group of layers, e.g. [[1, 2], [4, 8]]; every group
    after the first adds its input back (residual). encoder_hidden_size: units per layer.
    context_size is accepted and unused, as in NeuralForecast. decoder_hidden_size,
    decoder_layers, decoder_activation (default "ReLU"): the MLP decoder. input_size: -1
    means 3 * h. Training options: see `BaseModel` (num_lr_decays defaults to 3 here).
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
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
        if cell_type not in CELLS and cell_type not in STEP_CELLS:
            raise ValueError(f"DilatedRNN: cell_type={cell_type!r} is not known; use one of "
                             f"{list(CELLS) + list(STEP_CELLS)}.")
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
                name = f"rnn_stack.{g}.cells.{i}"
                layers.append(STEP_CELLS[cell_type](self.spec, name, fan_in, encoder_hidden_size)
                              if cell_type in STEP_CELLS else
                              RecurrentStack(self.spec, name, CELLS[cell_type], fan_in,
                                             encoder_hidden_size, 1))
            self.groups.append(layers)
        self.head = ContextDecoder(self.spec, self.input_size, h, encoder_hidden_size,
                                   self.futr_exog_size, self.n_outputs, decoder_hidden_size,
                                   decoder_layers, activation_name(decoder_activation or "ReLU"))

    def forward(self, p, batch, rng=None):
        x = ops.transpose(sequence_inputs(batch, self.input_size), (1, 0, 2))  # (L, B, C)
        for g, (layers, rates) in enumerate(zip(self.groups, self.dilations, strict=True)):
            residual = x
            for layer, rate in zip(layers, rates, strict=True):
                x = dilated(layer, p, x, rate)
            if g:
                x = ops.add(x, residual)
        return self.head(p, ops.transpose(x, (1, 2, 0)), batch["futr_exog"])  # (B, H, L) in
