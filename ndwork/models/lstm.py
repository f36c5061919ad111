"""LSTM: NeuralForecast's LSTM (recurrent=False), the RNN architecture with LSTM cells."""

from ndwork.models.rnn import RecurrentModel


class LSTM(RecurrentModel):
    """LSTM encoder and MLP decoder (NeuralForecast's LSTM).

    Options as `ndwork.models.RNN` (without encoder_activation). Training options: see
    `BaseModel`.
    """

    def cell(self) -> str:
        return "lstm"
