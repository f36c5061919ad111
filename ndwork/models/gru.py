"""GRU: NeuralForecast's GRU (recurrent=False), the RNN architecture with GRU cells."""

import warnings

from ndwork.models.rnn import RecurrentModel


class GRU(RecurrentModel):
    """GRU encoder and MLP decoder (NeuralForecast's GRU; its default hidden size is 200).

    Options as `ndwork.models.RNN`; encoder_activation is accepted and unused, as in
    NeuralForecast. Training options: see `BaseModel`.
    """

    def __init__(self, h: int, input_size: int = -1, encoder_hidden_size: int = 200,
                 encoder_activation: str | None = None, **kwargs):
        if encoder_activation is not None:
            warnings.warn("GRU(encoder_activation=...) is unused: GRU cells have fixed "
                          "activations.", UserWarning, stacklevel=2)
        self.encoder_activation = encoder_activation
        super().__init__(h, input_size, encoder_hidden_size=encoder_hidden_size, **kwargs)

    def cell(self) -> str:
        return "gru"
