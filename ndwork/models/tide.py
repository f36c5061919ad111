"""TiDE: a dense residual encoder-decoder over the flattened window and projected
covariates, a per-step temporal decoder, and a global linear skip."""

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import LayerNorm, Linear


class MLPResidual:
    """relu(lin1) -> lin2 -> dropout, plus a linear skip, then LayerNorm."""

    def __init__(self, spec, name, input_dim, hidden_size, output_dim, dropout, layernorm):
        self.lin1 = Linear(spec, f"{name}.lin1", input_dim, hidden_size)
        self.lin2 = Linear(spec, f"{name}.lin2", hidden_size, output_dim)
        self.skip = Linear(spec, f"{name}.skip", input_dim, output_dim)
        self.norm = LayerNorm(spec, f"{name}.norm", output_dim) if layernorm else None
        self.dropout = dropout

    def __call__(self, p, x, rng):
        y = ops.dropout(self.lin2(p, self.lin1(p, x, "relu")), self.dropout, rng)
        y = ops.add(y, self.skip(p, x))
        return self.norm(p, y) if self.norm else y


class TiDE(BaseModel):
    """TiDE (Das et al., 2023).

    hidden_size: encoder/decoder width. decoder_output_dim: per-step decoder features.
    temporal_decoder_dim: hidden width of the temporal decoder. dropout, layernorm.
    num_encoder_layers, num_decoder_layers. temporal_width: projected covariate width.
    Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    DEFAULTS = dict(inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, hidden_size: int = 512,
                 decoder_output_dim: int = 32, temporal_decoder_dim: int = 128,
                 dropout: float = 0.3, layernorm: bool = True, num_encoder_layers: int = 1,
                 num_decoder_layers: int = 1, temporal_width: int = 4, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.hidden_size, self.decoder_output_dim = hidden_size, decoder_output_dim
        self.temporal_decoder_dim, self.dropout, self.layernorm = (temporal_decoder_dim, dropout,
                                                                    layernorm)
        self.num_encoder_layers, self.num_decoder_layers = num_encoder_layers, num_decoder_layers
        self.temporal_width = temporal_width
        spec, args = self.spec, (dropout, layernorm)
        # NeuralForecast builds the historic projection whenever there are historic or
        # future inputs (with future ones only, it is never used): the same parameters here
        self.hist_projection = (MLPResidual(spec, "hist_exog_projection", self.hist_exog_size,
                                            hidden_size, temporal_width, *args)
                                if self.hist_exog_size or self.futr_exog_size else None)
        self.futr_projection = (MLPResidual(spec, "futr_exog_projection", self.futr_exog_size,
                                            hidden_size, temporal_width, *args)
                                if self.futr_exog_size else None)
        encoder_in = (input_size + input_size * (self.hist_exog_size > 0) * temporal_width
                      + (input_size + h) * (self.futr_exog_size > 0) * temporal_width
                      + self.stat_exog_size)
        self.encoder = [MLPResidual(spec, f"dense_encoder.{i}", encoder_in if i == 0 else hidden_size,
                                    hidden_size, hidden_size, *args)
                        for i in range(num_encoder_layers)]
        self.decoder = [MLPResidual(spec, f"dense_decoder.{i}", hidden_size, hidden_size,
                                    decoder_output_dim * h if i == num_decoder_layers - 1
                                    else hidden_size, *args)
                        for i in range(num_decoder_layers)]
        self.temporal_decoder = MLPResidual(
            spec, "temporal_decoder", decoder_output_dim + (self.futr_exog_size > 0) * temporal_width,
            temporal_decoder_dim, self.n_outputs, *args)
        self.global_skip = Linear(spec, "global_skip", input_size, h * self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"]
        b = y.shape[0]
        skip = ops.reshape(self.global_skip(p, y), (b, self.h, self.n_outputs))
        parts = [y]
        if self.hist_exog_size:
            hist = self.hist_projection(p, ops.as_tensor(batch["hist_exog"]), rng)
            parts.append(ops.reshape(hist, (b, -1)))
        if self.futr_projection:
            futr = self.futr_projection(p, ops.as_tensor(batch["futr_exog"]), rng)
            parts.append(ops.reshape(futr, (b, -1)))
        if self.stat_exog_size:
            parts.append(ops.as_tensor(batch["stat_exog"]))
        x = ops.concat(parts, axis=1)
        for layer in self.encoder + self.decoder:
            x = layer(p, x, rng)
        x = ops.reshape(x, (b, self.h, self.decoder_output_dim))
        if self.futr_projection:
            x = ops.concat([x, ops.index(futr, (slice(None), slice(self.input_size, None)))], axis=2)
        return ops.add(self.temporal_decoder(p, x, rng), skip)
