"""VanillaTransformer: an encoder over the input window and a decoder over its last
`label_len` values followed by h zeros, cross-attending to the encoder."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.transformer import (
    DataEmbedding,
    DecoderLayer,
    EncoderLayer,
    decoder_label_len,
    time_steps,
)


class VanillaTransformer(BaseModel):
    """Transformer (Vaswani et al., 2017) as NeuralForecast builds it.

    decoder_input_size_multiplier: label_len = ceil(input_size * it). hidden_size,
    n_head, conv_hidden_size (feed-forward width), activation ("gelu" or "relu"),
    encoder_layers, decoder_layers, dropout. Attention runs through ops.attention, so
    `Optimizations(attention="flash" | "naive")` chooses the kernel. Training options:
    see `BaseModel`.

    As in NeuralForecast 3.3 (whose attention path passes no mask), decoder
    self-attention is not causal. Unlike it, dropout is not applied to the attention
    probabilities (flash attention never forms them); it is applied everywhere else.
    """

    EXOGENOUS_FUTR = EXOGENOUS_CAT = True
    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, windows_batch_size=1024,
                    inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, decoder_input_size_multiplier: float = 0.5,
                 hidden_size: int = 128, dropout: float = 0.05, n_head: int = 4,
                 conv_hidden_size: int = 32, activation: str = "gelu", encoder_layers: int = 2,
                 decoder_layers: int = 1, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.label_len = decoder_label_len(input_size, decoder_input_size_multiplier, activation)
        self.decoder_input_size_multiplier = decoder_input_size_multiplier
        self.hidden_size, self.dropout, self.n_head = hidden_size, dropout, n_head
        self.conv_hidden_size, self.activation = conv_hidden_size, activation
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        spec, layer_args = self.spec, (hidden_size, n_head, conv_hidden_size, activation, dropout)
        self.enc_embedding = DataEmbedding(spec, "enc_embedding", self.futr_exog_size, hidden_size,
                                           dropout)
        self.dec_embedding = DataEmbedding(spec, "dec_embedding", self.futr_exog_size, hidden_size,
                                           dropout)
        self.encoder = [EncoderLayer(spec, f"encoder.{i}", *layer_args)
                        for i in range(encoder_layers)]
        self.encoder_norm = LayerNorm(spec, "encoder.norm", hidden_size)
        self.decoder = [DecoderLayer(spec, f"decoder.{i}", *layer_args)
                        for i in range(decoder_layers)]
        self.decoder_norm = LayerNorm(spec, "decoder.norm", hidden_size)
        self.projection = Linear(spec, "decoder.projection", hidden_size, self.n_outputs)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data  # the target is data, not a parameter
        futr = batch["futr_exog"]
        enc_exog = time_steps(futr, slice(None, self.input_size))
        dec_exog = time_steps(futr, slice(-(self.label_len + self.h), None))
        x = self.enc_embedding(p, y, enc_exog, rng)
        for layer in self.encoder:
            x = layer(p, x, rng)
        memory = self.encoder_norm(p, x)
        dec_in = np.concatenate([y[:, -self.label_len:], np.zeros((y.shape[0], self.h), y.dtype)],
                                axis=1)
        x = self.dec_embedding(p, dec_in, dec_exog, rng)
        for layer in self.decoder:
            x = layer(p, x, memory, rng)
        out = self.projection(p, self.decoder_norm(p, x))
        return ops.index(out, (slice(None), slice(-self.h, None)))
