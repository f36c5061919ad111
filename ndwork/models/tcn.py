"""TCN: causal dilated convolutions over the input window, a linear context adapter from
input_size to h steps, and an MLP decoder (NeuralForecast's TCN)."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.models.rnn import check_positive, sequence_inputs
from ndwork.nn import CausalConvStack, ContextDecoder


class TCN(BaseModel):
    """Temporal Convolution Network (NeuralForecast's TCN).

    input_size: input steps (-1: 3 * h). kernel_size, dilations (one causal Conv1d each),
    encoder_hidden_size (channels), encoder_activation: the encoder. context_size is
    accepted and unused, as in NeuralForecast. decoder_hidden_size, decoder_layers,
    decoder_activation (default "ReLU"): the MLP decoder. inference_input_size is
    accepted for NeuralForecast scripts (unused by this direct model). Training options:
    see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    INPUT_SIZE_FROM_HORIZON = True
    DEFAULTS = dict(windows_batch_size=128, inference_windows_batch_size=1024,
                    scaler_type="robust")

    def __init__(self, h: int, input_size: int = -1, inference_input_size=None,
                 kernel_size: int = 2, dilations: list[int] | None = None,
                 encoder_hidden_size: int = 128, encoder_activation: str = "ReLU",
                 context_size: int = 10, decoder_hidden_size: int = 128,
                 decoder_layers: int = 2, decoder_activation: str | None = None, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.inference_input_size, self.kernel_size = inference_input_size, kernel_size
        self.dilations = list(dilations if dilations is not None else [1, 2, 4, 8, 16])
        self.encoder_hidden_size, self.encoder_activation = encoder_hidden_size, encoder_activation
        self.context_size, self.decoder_hidden_size = context_size, decoder_hidden_size
        self.decoder_layers, self.decoder_activation = decoder_layers, decoder_activation
        check_positive(self, "kernel_size", "encoder_hidden_size", "decoder_layers")
        if not self.dilations or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                     for d in self.dilations):
            raise ValueError(f"TCN: dilations={self.dilations!r} must be a non-empty list of "
                             f"positive integers, e.g. [1, 2, 4, 8, 16].")
        reach = (kernel_size - 1) * max(self.dilations)
        if reach >= self.input_size:
            raise ValueError(f"TCN: kernel_size={kernel_size} with dilation {max(self.dilations)}"
                             f" reaches {reach} steps back, beyond input_size={self.input_size}; "
                             f"use smaller dilations or a longer input_size.")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.encoder = CausalConvStack(self.spec, "hist_encoder", channels, encoder_hidden_size,
                                       kernel_size, self.dilations,
                                       activation_name(encoder_activation))
        self.head = ContextDecoder(self.spec, self.input_size, h, encoder_hidden_size,
                                   self.futr_exog_size, self.n_outputs, decoder_hidden_size,
                                   decoder_layers, activation_name(decoder_activation or "ReLU"))

    def forward(self, p, batch, rng=None):
        hidden = self.encoder(p, sequence_inputs(batch, self.input_size))  # (B, L, C)
        return self.head(p, ops.transpose(hidden, (0, 2, 1)), batch["futr_exog"])
