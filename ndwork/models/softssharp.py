"""SOFTSSharp: SOFTS with learnt-scale positional encodings of the series and dropout
inside STAR."""

from ndwork.models.softs import SOFTS


class SOFTSSharp(SOFTS):
    """NeuralForecast's SOFTSSharp: SOFTS's options plus pe_keep_prob (the probability a
    training step adds the series' positional encodings; forecasts add them scaled by
    it). Training options: see `BaseModel`.
    """

    def __init__(self, h: int, input_size: int, n_series: int, hidden_size: int = 512,
                 d_core: int = 512, e_layers: int = 2, d_ff: int = 2048, dropout: float = 0.1,
                 pe_keep_prob: float = 0.5, use_norm: bool = True, **kwargs):
        if not 0.0 <= pe_keep_prob <= 1.0:
            raise ValueError(f"pe_keep_prob={pe_keep_prob!r} must be a probability in [0, 1].")
        self.pe_keep_prob = pe_keep_prob
        super().__init__(h, input_size, n_series, hidden_size, d_core, e_layers, d_ff, dropout,
                         use_norm, **kwargs)
