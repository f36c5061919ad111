"""xLSTM: an xLSTM block stack (mLSTM or sLSTM blocks) over the projected input window, a
linear projection over time from input_size to h steps, and an MLP decoder
(NeuralForecast's xLSTM, which needs the external `xlstm` package; built natively here,
see ndwork.nn.xlstm and ndwork.kernels.xlstm)."""

import warnings

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, activation_name
from ndwork.models.rnn import check_positive, sequence_inputs
from ndwork.nn import Linear, MLPDecoder
from ndwork.nn.xlstm import HEADS, XLSTMBlockStack

BACKBONES = ("mLSTM", "sLSTM")


class xLSTM(BaseModel):  # noqa: N801 (NeuralForecast's name)
    """xLSTM encoder and MLP decoder (NeuralForecast's xLSTM).

    input_size: input steps (-1: 3 * h). backbone ("mLSTM" or "sLSTM"), encoder_n_blocks,
    encoder_hidden_size (the embedding; a multiple of 4, the heads, for sLSTM),
    encoder_bias (mLSTM's projections), encoder_dropout (inside each block): the encoder.
    decoder_hidden_size, decoder_layers, decoder_dropout, decoder_activation (default
    "GELU"): the MLP decoder. inference_input_size and h_train are accepted for
    NeuralForecast scripts (unused by this direct model); recurrent=True warns and is
    ignored, as in NeuralForecast. Parameters at h=12, input_size=24, defaults: 239,037
    (mLSTM, NeuralForecast's count with the xlstm package) and 233,389 (sLSTM). Training
    options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    INPUT_SIZE_FROM_HORIZON = True
    DEFAULTS = dict(windows_batch_size=128, inference_windows_batch_size=1024,
                    scaler_type="robust")

    def __init__(self, h: int, input_size: int = -1, inference_input_size=None,
                 h_train: int = 1, encoder_n_blocks: int = 2, encoder_hidden_size: int = 128,
                 encoder_bias: bool = True, encoder_dropout: float = 0.1,
                 decoder_hidden_size: int = 128, decoder_layers: int = 2,
                 decoder_dropout: float = 0.0, decoder_activation: str | None = None,
                 backbone: str = "mLSTM", recurrent: bool = False, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if recurrent:
            warnings.warn("xLSTM does not support recurrent forecasts (as in NeuralForecast): "
                          "using recurrent=False.", UserWarning, stacklevel=2)
        self.inference_input_size, self.h_train = inference_input_size, h_train
        self.encoder_n_blocks, self.encoder_hidden_size = encoder_n_blocks, encoder_hidden_size
        self.encoder_bias, self.encoder_dropout = encoder_bias, encoder_dropout
        self.decoder_hidden_size, self.decoder_layers = decoder_hidden_size, decoder_layers
        self.decoder_dropout, self.decoder_activation = decoder_dropout, decoder_activation
        self.backbone, self.recurrent = backbone, False
        if backbone not in BACKBONES:
            raise ValueError(f"xLSTM: backbone={backbone!r}; use one of {list(BACKBONES)}.")
        check_positive(self, "encoder_n_blocks", "encoder_hidden_size", "decoder_layers")
        if decoder_layers > 1:
            check_positive(self, "decoder_hidden_size")
        if backbone == "sLSTM" and encoder_hidden_size % HEADS:
            raise ValueError(f"xLSTM(backbone='sLSTM'): encoder_hidden_size="
                             f"{encoder_hidden_size} must be a multiple of its {HEADS} heads.")
        for name in ("encoder_dropout", "decoder_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"xLSTM: {name}={getattr(self, name)!r} must be in [0, 1).")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.feature_projection = Linear(self.spec, "feature_projection", channels,
                                         encoder_hidden_size)
        self.encoder = XLSTMBlockStack(self.spec, "hist_encoder", backbone, encoder_hidden_size,
                                       encoder_n_blocks, encoder_bias, encoder_dropout)
        self.decoder = MLPDecoder(self.spec, "mlp_decoder",
                                  encoder_hidden_size + self.futr_exog_size, self.n_outputs,
                                  decoder_hidden_size, decoder_layers,
                                  activation_name(decoder_activation or "GELU"), decoder_dropout)
        self.temporal_projection = Linear(self.spec, "temporal_projection", self.input_size, h)

    def forward(self, p, batch, rng=None):
        x = self.feature_projection(p, sequence_inputs(batch, self.input_size))  # (B, L, E)
        hidden = ops.transpose(self.encoder(p, x, rng), (0, 2, 1))  # (B, E, L)
        hidden = ops.transpose(self.temporal_projection(p, hidden), (0, 2, 1))  # (B, h, E)
        if batch["futr_exog"] is not None:
            future = ops.index(ops.as_tensor(batch["futr_exog"]), (slice(None), slice(-self.h, None)))
            hidden = ops.concat([hidden, future], axis=2)
        return self.decoder(p, hidden, rng)
