"""Informer: a Transformer whose attention is ProbSparse (only the queries whose score
distribution is most peaked attend; the rest take a mean or cumulative sum of the
values) and whose encoder halves its length between layers (distilling)."""

import math

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import BatchNorm, LayerNorm, Linear
from ndwork.nn.transformer import (
    DataEmbedding,
    FeedForward,
    MultiHeadAttention,
    decoder_label_len,
    time_steps,
)


class ProbSparseAttention(MultiHeadAttention):
    """Zhou et al.'s ProbSparse self-attention, as NeuralForecast's ProbAttention.

    Each query is scored against `factor * ceil(ln N_k)` sampled keys (sparsity
    M = max - sum / N_k); the top `factor * ceil(ln N_q)` queries attend to every key
    (through ops.attention, flash or naive, when unmasked); the others take the mean of
    the values, or with `masked` their cumulative sum, as the reference does.
    """

    def __init__(self, spec, name, hidden_size, n_heads, factor, masked):
        super().__init__(spec, name, hidden_size, n_heads)
        self.factor, self.masked = factor, masked

    def __call__(self, p, x_q, x_kv, rng):
        b, n_q, c = x_q.shape
        n_k = x_kv.shape[1]
        q = self._heads(self.query(p, x_q))
        k = self._heads(self.key(p, x_kv))
        v = self._heads(self.value(p, x_kv))
        sample_k = min(self.factor * math.ceil(math.log(n_k)), n_k)
        n_top = min(self.factor * math.ceil(math.log(n_q)), n_q)
        sample = rng.integers(0, n_k, (n_q, sample_k))  # shared over batch and heads
        sampled = np.einsum("bhqd,bhqsd->bhqs", q.data, k.data[:, :, sample])
        sparsity = sampled.max(axis=-1) - sampled.sum(axis=-1) / n_k
        top = np.argpartition(-sparsity, n_top - 1, axis=-1)[..., :n_top]
        q_top = ops.take_rows(q, top)
        if self.masked:  # each top query sees keys up to its own position
            d = q.shape[-1]
            scores = ops.mul(ops.matmul(q_top, ops.transpose(k, (0, 1, 3, 2))),
                             ops.constant(np.asarray(1 / math.sqrt(d), x_q.data.dtype)))
            future = np.arange(n_k)[None, None, None, :] > top[..., None]
            scores = ops.add(scores, ops.constant(np.where(future, -np.inf, 0).astype(
                x_q.data.dtype)))
            attended = ops.matmul(ops.activation(scores, "softmax"), v)
            context = ops.cumsum(v, axis=2)
        else:
            attended = ops.attention(q_top, k, v)
            context = ops.add(ops.constant(np.zeros((b, self.n_heads, n_q, c // self.n_heads),
                                                    x_q.data.dtype)), ops.mean(v, axis=2))
        heads = ops.put_rows(context, top, attended)  # (B, heads, N_q, d)
        # NeuralForecast's ProbAttention hands (B, heads, N_q, d) to an attention layer
        # that views it as (B, N_q, heads * d): positions and heads mix (the original
        # Informer's mix=True); the same reshape here, so the function is NF's
        merged = ops.reshape(heads, (b, n_q, c))
        return self.out(p, merged)


class DistilLayer:
    """Conv1d(k=3, circular padding 2) -> BatchNorm -> ELU -> MaxPool(3, stride 2, pad 1):
    (B, N, C) -> (B, floor((N + 1) / 2) + 1, C)."""

    def __init__(self, spec, name, channels):
        self.conv = Linear(spec, f"{name}.downConv", 3 * channels, channels)
        self.norm = BatchNorm(spec, f"{name}.norm", channels)

    def __call__(self, p, x, training):
        n = x.shape[1]
        rows = (slice(None),)
        padded = ops.concat([ops.index(x, (*rows, slice(n - 2, n))), x,
                             ops.index(x, (*rows, slice(0, 2)))], axis=1)  # circular, 2 each side
        taps = ops.concat([ops.index(padded, (*rows, slice(j, j + n + 2))) for j in range(3)],
                          axis=2)
        y = ops.activation(self.norm(p, self.conv(p, taps), training), "elu")
        b, m, c = y.shape
        edge = ops.constant(np.full((b, 1, c), -np.inf, y.data.dtype))
        y = ops.concat([edge, y, edge], axis=1)
        out = (m + 2 - 3) // 2 + 1
        starts = [ops.index(y, (*rows, slice(j, j + 2 * out - 1, 2))) for j in range(3)]
        return ops.maximum(ops.maximum(starts[0], starts[1]), starts[2])


class Informer(BaseModel):
    """Informer (Zhou et al., 2021) as NeuralForecast builds it.

    decoder_input_size_multiplier, hidden_size, n_head, conv_hidden_size, activation,
    encoder_layers, decoder_layers, dropout as in VanillaTransformer; factor: ProbSparse
    sampling factor; distil: halve the encoder length between layers. Queries are
    sampled with the training random state in fit and a fixed seed in predict, so
    predictions are deterministic. Training options: see `BaseModel`.
    """

    EXOGENOUS_FUTR = EXOGENOUS_CAT = True
    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, inference_windows_batch_size=1024)
    PREDICT_SEED = 0

    def __init__(self, h: int, input_size: int, decoder_input_size_multiplier: float = 0.5,
                 hidden_size: int = 128, dropout: float = 0.05, factor: int = 3, n_head: int = 4,
                 conv_hidden_size: int = 32, activation: str = "gelu", encoder_layers: int = 2,
                 decoder_layers: int = 1, distil: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.label_len = decoder_label_len(input_size, decoder_input_size_multiplier, activation)
        self.decoder_input_size_multiplier, self.hidden_size = (decoder_input_size_multiplier,
                                                                hidden_size)
        self.dropout, self.factor, self.n_head = dropout, factor, n_head
        self.conv_hidden_size, self.activation = conv_hidden_size, activation
        self.encoder_layers, self.decoder_layers, self.distil = (encoder_layers, decoder_layers,
                                                                 distil)
        spec = self.spec
        self.enc_embedding = DataEmbedding(spec, "enc_embedding", self.futr_exog_size,
                                           hidden_size, dropout)
        self.dec_embedding = DataEmbedding(spec, "dec_embedding", self.futr_exog_size,
                                           hidden_size, dropout)
        ffn = (hidden_size, conv_hidden_size, activation, dropout)
        self.encoder = []
        for i in range(encoder_layers):
            name = f"encoder.attn_layers.{i}"
            self.encoder.append((
                ProbSparseAttention(spec, f"{name}.attention", hidden_size, n_head, factor, False),
                FeedForward(spec, name, *ffn), LayerNorm(spec, f"{name}.norm1", hidden_size),
                LayerNorm(spec, f"{name}.norm2", hidden_size)))
        self.distil_layers = ([DistilLayer(spec, f"encoder.conv_layers.{i}", hidden_size)
                               for i in range(encoder_layers - 1)] if distil else [])
        self.encoder_norm = LayerNorm(spec, "encoder.norm", hidden_size)
        self.decoder = []
        for i in range(decoder_layers):
            name = f"decoder.layers.{i}"
            self.decoder.append((
                ProbSparseAttention(spec, f"{name}.self_attention", hidden_size, n_head, factor,
                                    True),
                ProbSparseAttention(spec, f"{name}.cross_attention", hidden_size, n_head, factor,
                                    False),
                FeedForward(spec, name, *ffn),
                [LayerNorm(spec, f"{name}.norm{j}", hidden_size) for j in (1, 2, 3)]))
        self.decoder_norm = LayerNorm(spec, "decoder.norm", hidden_size)
        self.projection = Linear(spec, "decoder.projection", hidden_size, self.n_outputs)

    def forward(self, p, batch, rng=None):
        training = rng is not None
        sampler = rng if training else np.random.default_rng(self.PREDICT_SEED)
        y = batch["insample_y"].data
        futr = batch["futr_exog"]
        drop = self.dropout
        x = self.enc_embedding(p, y, time_steps(futr, slice(None, self.input_size)),
                               rng)
        for i, (attention, ffn, norm1, norm2) in enumerate(self.encoder):
            x = norm1(p, ops.add(x, ops.dropout(attention(p, x, x, sampler), drop, rng)))
            x = norm2(p, ops.add(x, ffn(p, x, rng)))
            if i < len(self.distil_layers):
                x = self.distil_layers[i](p, x, training)
        memory = self.encoder_norm(p, x)
        dec_in = np.concatenate([y[:, -self.label_len:], np.zeros((y.shape[0], self.h), y.dtype)],
                                axis=1)
        dec_exog = time_steps(futr, slice(-(self.label_len + self.h), None))
        x = self.dec_embedding(p, dec_in, dec_exog, rng)
        for self_attention, cross_attention, ffn, norms in self.decoder:
            x = norms[0](p, ops.add(x, ops.dropout(self_attention(p, x, x, sampler), drop, rng)))
            x = norms[1](p, ops.add(x, ops.dropout(cross_attention(p, x, memory, sampler), drop,
                                                   rng)))
            x = norms[2](p, ops.add(x, ffn(p, x, rng)))
        out = self.projection(p, self.decoder_norm(p, x))
        return ops.index(out, (slice(None), slice(-self.h, None)))
