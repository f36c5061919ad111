"""RNN: a stack of Elman recurrent layers over the input window, then an MLP decoder on
the last h hidden states (NeuralForecast's RNN, recurrent=False). LSTM and GRU are the
same architecture with other cells (lstm.py, gru.py)."""

import warnings

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.nn import Linear, MLPDecoder, RecurrentStack


def sequence_inputs(batch: dict, input_size: int) -> ops.Tensor:
    """[y | hist_exog | stat_exog repeated | futr_exog of the input steps]: (B, L, channels),
    NeuralForecast's encoder input of its recurrent and convolutional models."""
    y = batch["insample_y"]
    b = y.shape[0]
    parts = [ops.reshape(y, (b, input_size, 1))]
    if batch["hist_exog"] is not None:
        parts.append(ops.constant(batch["hist_exog"]))
    if batch["stat_exog"] is not None:
        stat = batch["stat_exog"][:, None, :]
        parts.append(ops.constant(stat.repeat(input_size, axis=1)))
    if batch["futr_exog"] is not None:
        parts.append(ops.constant(batch["futr_exog"][:, :input_size]))
    return ops.concat(parts, axis=2)


def check_positive(model, *names: str) -> None:
    for name in names:
        value = getattr(model, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(model).__name__}: {name}={value!r} must be a positive "
                             f"integer.")


class RecurrentModel(BaseModel):
    """The encoder-decoder NeuralForecast's RNN, LSTM and GRU share (recurrent=False):
    the recurrent stack reads the input window with its exogenous channels; its last h
    hidden states (linearly upsampled over time when h > input_size), with the future
    exogenous values of the horizon, go through the MLP decoder to h forecasts."""

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = True
    INPUT_SIZE_FROM_HORIZON = True
    DEFAULTS = dict(windows_batch_size=128, inference_windows_batch_size=1024,
                    scaler_type="robust")

    def __init__(self, h: int, input_size: int = -1, inference_input_size=None,
                 h_train: int = 1, encoder_n_layers: int = 2, encoder_hidden_size: int = 128,
                 encoder_bias: bool = True, encoder_dropout: float = 0.0, context_size=None,
                 decoder_hidden_size: int = 128, decoder_layers: int = 2,
                 decoder_activation: str | None = None, recurrent: bool = False, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if recurrent:
            raise ValueError(f"{type(self).__name__}(recurrent=True): recursive forecasting is "
                             f"not built in ndwork yet; use recurrent=False (the default: "
                             f"direct forecasts of all h steps).")
        if context_size is not None:
            warnings.warn("context_size is deprecated in NeuralForecast and unused.",
                          UserWarning, stacklevel=3)
        self.inference_input_size, self.h_train = inference_input_size, h_train
        self.encoder_n_layers, self.encoder_hidden_size = encoder_n_layers, encoder_hidden_size
        self.encoder_bias, self.encoder_dropout = encoder_bias, encoder_dropout
        self.context_size, self.recurrent = context_size, recurrent
        self.decoder_hidden_size, self.decoder_layers = decoder_hidden_size, decoder_layers
        self.decoder_activation = decoder_activation
        check_positive(self, "encoder_n_layers", "encoder_hidden_size", "decoder_layers")
        if decoder_layers > 1:
            check_positive(self, "decoder_hidden_size")
        if not 0 <= encoder_dropout < 1:
            raise ValueError(f"encoder_dropout={encoder_dropout!r} must be in [0, 1).")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.encoder = RecurrentStack(self.spec, "hist_encoder", self.cell(), channels,
                                      encoder_hidden_size, encoder_n_layers, encoder_bias,
                                      encoder_dropout)
        self.decoder = MLPDecoder(self.spec, "mlp_decoder",
                                  encoder_hidden_size + self.futr_exog_size, self.n_outputs,
                                  decoder_hidden_size, decoder_layers,
                                  activation_name(decoder_activation or "ReLU"))
        self.upsample = (Linear(self.spec, "upsample_sequence", self.input_size, h)
                         if h > self.input_size else None)

    def cell(self) -> str:
        """The recurrent cell: "rnn_tanh", "rnn_relu", "lstm" or "gru"."""
        raise NotImplementedError

    def forward(self, p, batch, rng=None):
        hidden = self.encoder(p, sequence_inputs(batch, self.input_size), rng)  # (B, L, H)
        if self.upsample is not None:  # over time: (B, H, L) -> (B, H, h)
            hidden = ops.transpose(self.upsample(p, ops.transpose(hidden, (0, 2, 1))), (0, 2, 1))
        else:
            hidden = ops.index(hidden, (slice(None), slice(-self.h, None)))
        if batch["futr_exog"] is not None:
            hidden = ops.concat([hidden, ops.constant(batch["futr_exog"][:, -self.h:])], axis=2)
        return self.decoder(p, hidden)  # (B, h, n_outputs)


class RNN(RecurrentModel):
    """Elman RNN (NeuralForecast's RNN), recurrent=False.

    input_size: input steps (-1: 3 * h). encoder_n_layers, encoder_hidden_size,
    encoder_activation ("tanh" or "relu"), encoder_bias, encoder_dropout (between layers):
    the recurrent stack. decoder_hidden_size, decoder_layers, decoder_activation (default
    "ReLU"): the MLP decoder. inference_input_size and h_train are accepted for
    NeuralForecast scripts and only matter with recurrent=True, which ndwork does not
    have yet. Training options: see `BaseModel`.
    """

    def __init__(self, h: int, input_size: int = -1, encoder_activation: str = "tanh",
                 **kwargs):
        if encoder_activation not in ("tanh", "relu"):
            raise ValueError(f"encoder_activation={encoder_activation!r}: use 'tanh' or 'relu'.")
        self.encoder_activation = encoder_activation
        super().__init__(h, input_size, **kwargs)

    def cell(self) -> str:
        return f"rnn_{self.encoder_activation}"
