"""DeepAR: an LSTM over the series whose every step outputs the parameters of the next
value's distribution; forecasts are sample paths, each draw fed back as the next input
(NeuralForecast's DeepAR; Salinas et al. 2020)."""

from ndwork.losses import MAE, DistributionLoss
from ndwork.models.base import BaseModel, activation_name
from ndwork.models.rnn import Recursive, check_positive
from ndwork.nn import MLPDecoder, RecurrentStack


class DeepAR(Recursive, BaseModel):
    """DeepAR (NeuralForecast's DeepAR: its names and defaults).

    input_size: steps read before forecasting (-1: 3 * h). h_train: targets per training
    window (teacher forcing, see `ndwork.models.rnn.Recursive`). lstm_n_layers,
    lstm_hidden_size, lstm_dropout (between layers): the LSTM. decoder_hidden_layers,
    decoder_hidden_size, decoder_activation (default "ReLU"): the MLP from each hidden
    state to the distribution's parameters (0 hidden layers: one Linear).
    trajectory_samples: sample paths per forecast; predict's mean and quantiles are
    theirs. NeuralForecast 3.3 instead feeds back the distribution's mean and takes each
    step's quantiles from that step's distribution alone, which ignores how uncertainty
    compounds over the horizon; ndwork samples whole paths, as the paper does.
    loss: a distribution loss (default DistributionLoss("StudentT", level=[80, 90]));
    valid_loss: default MAE() on the mean. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    INPUT_SIZE_FROM_HORIZON = True
    TRAJECTORIES = True
    DEFAULTS = dict(num_lr_decays=3)

    def __init__(self, h: int, input_size: int = -1, h_train: int = 1, lstm_n_layers: int = 2,
                 lstm_hidden_size: int = 128, lstm_dropout: float = 0.1,
                 decoder_hidden_layers: int = 0, decoder_hidden_size: int = 0,
                 decoder_activation: str | None = None, trajectory_samples: int = 100,
                 **kwargs):
        if kwargs.get("exclude_insample_y"):
            raise ValueError("DeepAR reads its own past values: exclude_insample_y=True is "
                             "not possible (as in NeuralForecast).")
        kwargs.setdefault("loss", DistributionLoss("StudentT", level=[80, 90]))
        kwargs.setdefault("valid_loss", MAE())
        super().__init__(h, input_size, **kwargs)
        self.h_train, self.inference_input_size = h_train, None
        self.lstm_n_layers, self.lstm_hidden_size = lstm_n_layers, lstm_hidden_size
        self.lstm_dropout, self.trajectory_samples = lstm_dropout, trajectory_samples
        self.decoder_hidden_layers, self.decoder_hidden_size = (decoder_hidden_layers,
                                                                decoder_hidden_size)
        self.decoder_activation = decoder_activation
        check_positive(self, "h_train", "lstm_n_layers", "lstm_hidden_size",
                       "trajectory_samples")
        if not 0 <= lstm_dropout < 1:
            raise ValueError(f"lstm_dropout={lstm_dropout!r} must be in [0, 1).")
        if decoder_hidden_layers < 0 or (decoder_hidden_layers > 0 and decoder_hidden_size < 1):
            raise ValueError(f"decoder_hidden_layers={decoder_hidden_layers} needs "
                             f"decoder_hidden_size > 0 (got {decoder_hidden_size}).")
        channels = 1 + self.hist_exog_size + self.stat_exog_size + self.futr_exog_size
        self.encoder = RecurrentStack(self.spec, "hist_encoder", "lstm", channels,
                                      lstm_hidden_size, lstm_n_layers, True, lstm_dropout)
        self.proj = MLPDecoder(self.spec, "decoder", lstm_hidden_size, self.n_outputs,
                               decoder_hidden_size, decoder_hidden_layers + 1,
                               activation_name(decoder_activation or "ReLU"))

    def forward(self, p, batch, rng=None):
        return self._teacher_forced(p, batch, rng) if rng is not None else self._decode(p, batch)
