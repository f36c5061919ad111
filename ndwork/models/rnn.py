"""RNN: a stack of Elman recurrent layers over the input window, then an MLP decoder on
the last h hidden states (NeuralForecast's RNN, recurrent=False). LSTM and GRU are the
same architecture with other cells (lstm.py, gru.py)."""

import warnings

import numpy as np

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
        parts.append(ops.as_tensor(batch["hist_exog"]))
    if batch["stat_exog"] is not None:
        parts.append(_over_time(batch["stat_exog"], input_size))
    if batch["futr_exog"] is not None:
        parts.append(ops.index(ops.as_tensor(batch["futr_exog"]),
                               (slice(None), slice(None, input_size))))
    return ops.concat(parts, axis=2)


def _over_time(stat, steps: int) -> ops.Tensor:
    """Static values (B, S) repeated over `steps` time steps -> (B, steps, S)."""
    stat = ops.as_tensor(stat)
    b, s = stat.shape
    return ops.mul(ops.reshape(stat, (b, 1, s)), ops.constant(np.ones((1, steps, 1),
                                                                      stat.data.dtype)))


def check_positive(model, *names: str) -> None:
    for name in names:
        value = getattr(model, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(model).__name__}: {name}={value!r} must be a positive "
                             f"integer.")


class Recursive:
    """Recursive forecasting (NeuralForecast's recurrent=True) for a model with a
    RecurrentStack `encoder` and a map `proj` of each hidden state to the outputs (None:
    the encoder's own projection). Every step's output forecasts the next value. Training
    windows hold input_size + 1 inputs and h_train targets, the targets before the last
    fed in as inputs (teacher forcing); forecasts read inference_input_size + 1 values
    (input_size + 1 by default) and then feed each forecast back as the next input, from
    the carried states, h times (validation likewise). Each step's input is the previous
    value beside the exogenous values of the step it forecasts (NeuralForecast's shift;
    historic exogenous values beyond the input are zeros)."""

    recurrent = True

    def windows(self, stage: str) -> tuple[int, int]:
        if not self.recurrent:
            return super().windows(stage)
        if stage == "train":  # one more input: each step's input is the previous value
            return self.input_size + 1, self.h_train
        if stage == "predict":
            return (self.inference_input_size or self.input_size) + 1, self.h
        return self.input_size + 1, self.h

    def _shifted_inputs(self, y: ops.Tensor, batch: dict, steps: int) -> ops.Tensor:
        """(B, steps, channels): y (B, steps) beside each step's next exogenous values."""
        b = y.shape[0]
        parts = [ops.reshape(y, (b, steps, 1))]
        if batch["hist_exog"] is not None:  # known over the input only: zeros after it
            hist = ops.index(ops.as_tensor(batch["hist_exog"]), (slice(None), slice(1, None)))
            pad = np.zeros((b, steps - hist.shape[1], hist.shape[2]), hist.data.dtype)
            parts.append(ops.concat([hist, ops.constant(pad)], axis=1))
        if batch["stat_exog"] is not None:
            parts.append(_over_time(batch["stat_exog"], steps))
        if batch["futr_exog"] is not None:
            parts.append(ops.index(ops.as_tensor(batch["futr_exog"]),
                                   (slice(None), slice(1, steps + 1))))
        return ops.concat(parts, axis=2)

    def _teacher_forced(self, p, batch, rng):
        """Training: the window's inputs and all targets but the last, in one sequence;
        the forecasts of the last h_train steps (B, h_train, n_outputs)."""
        targets = batch["outsample_y"].shape[1]
        y = ops.concat([batch["insample_y"], ops.constant(batch["outsample_y"][:, :-1])], axis=1)
        out = self.encoder(p, self._shifted_inputs(y, batch, y.shape[1]), rng)
        if self.proj is not None:
            out = self.proj(p, out)
        return ops.index(out, (slice(None), slice(-targets, None)))

    def _decode(self, p, batch):
        """Inference: read the input window, then feed each forecast back (B, h, n_out)."""
        x, steps, h = self._decoder_inputs(batch)

        def next_input(step, hidden):
            return self._step_input(batch, steps + step + 1,
                                    self._feedback(self._outputs(p, hidden), batch))

        hidden = self.encoder.decode(p, x, h - 1, next_input)  # (h, B, H)
        return ops.constant(np.ascontiguousarray(self._outputs(p, hidden).transpose(1, 0, 2)))

    def sample_paths(self, p, batch: dict, n: int, rng: np.random.Generator) -> np.ndarray:
        """n sample paths per window (B, h, n) in the data's scale: read the input window
        once, then at every step draw each path's next value from the distribution its
        own state gives and feed that draw back (DeepAR's ancestral sampling)."""
        x, steps, h = self._decoder_inputs(batch)
        shift = np.repeat(batch["y_shift"], n)
        scale = np.repeat(batch["y_scale"], n)
        draws = []

        def draw(hidden):
            values = self.loss.sample(self._outputs(p, hidden)[:, None, :], shift, scale, 1,
                                      rng)[0][:, 0, 0]
            draws.append(values)
            return ((values - shift) / scale)[:, None].astype(hidden.dtype)

        def next_input(step, hidden):
            return self._step_input(batch, steps + step + 1, draw(hidden), n)

        hidden = self.encoder.decode(p, x, h - 1, next_input, repeat=n)
        draw(hidden[-1])
        return np.stack(draws, axis=1).reshape(-1, n, h).transpose(0, 2, 1)

    def _decoder_inputs(self, batch):
        """The input window as the time-major sequence decode reads, its length, h."""
        y = batch["insample_y"]
        steps = y.shape[1]
        x = self._shifted_inputs(y, batch, steps).data.transpose(1, 0, 2)
        return x, steps, batch["outsample_y"].shape[1]

    def _outputs(self, p, hidden: np.ndarray) -> np.ndarray:
        """A step's hidden states (..., H) -> the raw outputs (..., n_outputs)."""
        return hidden if self.proj is None else self.proj(p, ops.constant(hidden)).data

    def _step_input(self, batch: dict, t: int, value: np.ndarray, repeat: int = 1) -> np.ndarray:
        """A decoding step's input: the fed-back value (B * repeat, 1) beside the
        exogenous values of window position t (each window's repeated `repeat` times)."""
        b = batch["insample_y"].shape[0]
        parts = []
        if batch["hist_exog"] is not None:
            parts.append(np.zeros((b, batch["hist_exog"].shape[2]), value.dtype))
        if batch["stat_exog"] is not None:
            parts.append(ops.values(batch["stat_exog"]))
        if batch["futr_exog"] is not None:
            parts.append(ops.values(batch["futr_exog"])[:, t])
        exog = [np.repeat(part, repeat, axis=0) for part in parts]
        return np.concatenate([value, *exog], axis=1).astype(value.dtype, copy=False)

    def _feedback(self, raw: np.ndarray, batch: dict) -> np.ndarray:
        """The next input (B, 1), scaled as the windows are, from a step's raw outputs
        (B, n_outputs): the forecast, MQLoss's mean quantile, or a distribution's mean
        (as NeuralForecast feeds back)."""
        if not self.loss.is_distribution_output:
            return raw.mean(axis=1, keepdims=True)
        shift, scale = batch["y_shift"], batch["y_scale"]
        mean = self.loss.mean(raw[:, None, :], shift, scale)[:, 0]
        return ((mean - shift) / scale)[:, None].astype(raw.dtype)


class RecurrentModel(Recursive, BaseModel):
    """The architecture NeuralForecast's RNN, LSTM and GRU share.

    recurrent=False (direct): the recurrent stack reads the input window with its
    exogenous channels; its last h hidden states (linearly upsampled over time when
    h > input_size), with the future exogenous values of the horizon, go through the MLP
    decoder to h forecasts.
    recurrent=True (recursive, see `Recursive`): every step's hidden state goes through a
    linear map (for LSTM, PyTorch's proj_size inside the cell) to a forecast of the next
    value."""

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    INPUT_SIZE_FROM_HORIZON = True
    DEFAULTS = dict(windows_batch_size=128, inference_windows_batch_size=1024,
                    scaler_type="robust")

    def __init__(self, h: int, input_size: int = -1, inference_input_size=None,
                 h_train: int = 1, encoder_n_layers: int = 2, encoder_hidden_size: int = 128,
                 encoder_bias: bool = True, encoder_dropout: float = 0.0, context_size=None,
                 decoder_hidden_size: int = 128, decoder_layers: int = 2,
                 decoder_activation: str | None = None, recurrent: bool = False, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if inference_input_size is not None and inference_input_size < 1:
            warnings.warn(f"inference_input_size={inference_input_size} is too small: using "
                          f"input_size={self.input_size}, as NeuralForecast does.", UserWarning,
                          stacklevel=3)
            inference_input_size = None
        if context_size is not None:
            warnings.warn("context_size is deprecated in NeuralForecast and unused.",
                          UserWarning, stacklevel=3)
        self.inference_input_size, self.h_train = inference_input_size, h_train
        self.encoder_n_layers, self.encoder_hidden_size = encoder_n_layers, encoder_hidden_size
        self.encoder_bias, self.encoder_dropout = encoder_bias, encoder_dropout
        self.context_size, self.recurrent = context_size, recurrent
        self.decoder_hidden_size, self.decoder_layers = decoder_hidden_size, decoder_layers
        self.decoder_activation = decoder_activation
        check_positive(self, "encoder_n_layers", "encoder_hidden_size", "decoder_layers",
                       "h_train")
        if inference_input_size is not None:
            check_positive(self, "inference_input_size")
        if decoder_layers > 1:
            check_positive(self, "decoder_hidden_size")
        if not 0 <= encoder_dropout < 1:
            raise ValueError(f"encoder_dropout={encoder_dropout!r} must be in [0, 1).")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        projected = recurrent and self.cell() == "lstm"  # its outputs are the forecasts
        self.encoder = RecurrentStack(self.spec, "hist_encoder", self.cell(), channels,
                                      encoder_hidden_size, encoder_n_layers, encoder_bias,
                                      encoder_dropout, self.n_outputs if projected else 0)
        if recurrent:
            self.proj = None if projected else Linear(self.spec, "proj", encoder_hidden_size,
                                                      self.n_outputs)
            return
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
        if self.recurrent:
            return self._teacher_forced(p, batch, rng) if rng is not None else \
                self._decode(p, batch)
        hidden = self.encoder(p, sequence_inputs(batch, self.input_size), rng)  # (B, L, H)
        if self.upsample is not None:  # over time: (B, H, L) -> (B, H, h)
            hidden = ops.transpose(self.upsample(p, ops.transpose(hidden, (0, 2, 1))), (0, 2, 1))
        else:
            hidden = ops.index(hidden, (slice(None), slice(-self.h, None)))
        if batch["futr_exog"] is not None:
            future = ops.index(ops.as_tensor(batch["futr_exog"]), (slice(None), slice(-self.h, None)))
            hidden = ops.concat([hidden, future], axis=2)
        return self.decoder(p, hidden)  # (B, h, n_outputs)


class RNN(RecurrentModel):
    """Elman RNN (NeuralForecast's RNN).

    input_size: input steps (-1: 3 * h). encoder_n_layers, encoder_hidden_size,
    encoder_activation ("tanh" or "relu"), encoder_bias, encoder_dropout (between layers):
    the recurrent stack. decoder_hidden_size, decoder_layers, decoder_activation (default
    "ReLU"): the MLP decoder (direct mode). recurrent (False: direct, True: recursive,
    see `RecurrentModel`), h_train (training targets per window) and inference_input_size
    (values read before decoding; input_size by default) as NeuralForecast. Training
    options: see `BaseModel`.
    """

    def __init__(self, h: int, input_size: int = -1, encoder_activation: str = "tanh",
                 **kwargs):
        if encoder_activation not in ("tanh", "relu"):
            raise ValueError(f"encoder_activation={encoder_activation!r}: use 'tanh' or 'relu'.")
        self.encoder_activation = encoder_activation
        super().__init__(h, input_size, **kwargs)

    def cell(self) -> str:
        return f"rnn_{self.encoder_activation}"
