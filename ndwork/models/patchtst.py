"""PatchTST: the window cut into overlapping patches, each a token of a Transformer
encoder with BatchNorm, residual attention scores and a flatten head; RevIN around it."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.config import active
from ndwork.models.base import BaseModel
from ndwork.nn import BatchNorm, Linear
from ndwork.nn.transformer import MultiHeadAttention

REVIN_EPS = 1e-5


class _EncoderLayer:
    """Post-norm encoder layer with BatchNorm; with residual attention the pre-softmax
    scores of the previous layer are added to this layer's (Liu et al.'s RealFormer)."""

    def __init__(self, model, name, hidden_size, n_heads, linear_hidden_size, activation,
                 dropout):
        spec = model.spec
        self.attention = MultiHeadAttention(spec, f"{name}.self_attn", hidden_size, n_heads)
        head_dim = hidden_size // n_heads
        # NeuralForecast keeps the scale as a frozen parameter: counted, never trained
        model.constants[f"{name}.self_attn.sdp_attn.scale"] = np.array([head_dim**-0.5],
                                                                      active().dtypes.compute)
        self.norm_attn = BatchNorm(spec, f"{name}.norm_attn", hidden_size)
        self.ff1 = Linear(spec, f"{name}.ff.0", hidden_size, linear_hidden_size)
        self.ff2 = Linear(spec, f"{name}.ff.3", linear_hidden_size, hidden_size)
        self.norm_ffn = BatchNorm(spec, f"{name}.norm_ffn", hidden_size)
        self.activation, self.dropout = activation, dropout
        self.scale = head_dim**-0.5

    def _residual_attention(self, p, x, prev):
        """Materialized scores, because the next layer needs them (flash never forms them)."""
        mha = self.attention
        q, k, v = (mha._heads(layer(p, x)) for layer in (mha.query, mha.key, mha.value))
        scores = ops.mul(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))),
                         ops.constant(np.asarray(self.scale, x.data.dtype)))
        if prev is not None:
            scores = ops.add(scores, prev)
        heads = ops.matmul(ops.activation(scores, "softmax"), v)
        b, n, c = x.shape
        merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (b, n, c))
        return mha.out(p, merged), scores

    def __call__(self, p, x, prev, rng, residual_attention):
        if residual_attention:
            attended, prev = self._residual_attention(p, x, prev)
        else:
            attended = self.attention(p, x, x)
        training = rng is not None
        attended = ops.dropout(attended, self.dropout, rng)  # the projection's dropout
        x = self.norm_attn(p, ops.add(x, ops.dropout(attended, self.dropout, rng)), training)
        y = ops.dropout(ops.activation(self.ff1(p, x), self.activation), self.dropout, rng)
        y = self.ff2(p, y)
        x = self.norm_ffn(p, ops.add(x, ops.dropout(y, self.dropout, rng)), training)
        return x, prev


class PatchTST(BaseModel):
    """PatchTST (Nie et al., 2023) as NeuralForecast builds it.

    encoder_layers, n_heads, hidden_size, linear_hidden_size (feed-forward width),
    dropout, head_dropout, patch_len, stride, revin (subtract-last RevIN; affine not
    supported), activation ("gelu" or "relu"), res_attention (add the previous layer's
    scores; materialized, so it does not use flash attention), learn_pos_embed.
    fc_dropout and attn_dropout are accepted for compatibility; as in NeuralForecast's
    flatten head, fc_dropout has no effect, and attention-probability dropout is not
    applied. Training options: see `BaseModel`.
    """

    DEFAULTS = dict(max_steps=5000, learning_rate=1e-4, inference_windows_batch_size=1024)

    def __init__(self, h: int, input_size: int, encoder_layers: int = 3, n_heads: int = 16,
                 hidden_size: int = 128, linear_hidden_size: int = 256, dropout: float = 0.2,
                 fc_dropout: float = 0.2, head_dropout: float = 0.0, attn_dropout: float = 0.0,
                 patch_len: int = 16, stride: int = 8, revin: bool = True,
                 revin_affine: bool = False, revin_subtract_last: bool = True,
                 activation: str = "gelu", res_attention: bool = True,
                 batch_normalization: bool = False, learn_pos_embed: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if revin_affine or not revin_subtract_last or batch_normalization:
            raise ValueError("PatchTST supports revin_affine=False, revin_subtract_last=True and "
                             "batch_normalization=False (NeuralForecast's defaults).")
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation {activation!r} must be 'gelu' or 'relu'.")
        self.encoder_layers, self.n_heads, self.hidden_size = encoder_layers, n_heads, hidden_size
        self.linear_hidden_size, self.dropout, self.fc_dropout = (linear_hidden_size, dropout,
                                                                   fc_dropout)
        self.head_dropout, self.attn_dropout = head_dropout, attn_dropout
        self.stride, self.revin, self.revin_affine = stride, revin, revin_affine
        self.revin_subtract_last, self.activation = revin_subtract_last, activation
        self.res_attention, self.batch_normalization = res_attention, batch_normalization
        self.learn_pos_embed = learn_pos_embed
        self.patch_len = min(input_size + stride, patch_len)
        self.patch_num = int((input_size - self.patch_len) / stride + 1) + 1  # +1: end padding
        spec = self.spec
        # declared in NeuralForecast's order (its checkpoints map on by position)
        self.W_pos = spec.add("backbone.W_pos", (self.patch_num, hidden_size), "uniform", 0.02)
        self.W_P = Linear(spec, "backbone.W_P", self.patch_len, hidden_size)
        if not learn_pos_embed:  # a fixed draw: counted like NeuralForecast's frozen parameter
            self.constants["backbone.W_pos"] = np.random.default_rng(self.random_seed).uniform(
                -0.02, 0.02, (self.patch_num, hidden_size)).astype(active().dtypes.compute)
            del spec.shapes["backbone.W_pos"], spec.inits["backbone.W_pos"]
        self.layers = [_EncoderLayer(self, f"backbone.encoder.layers.{i}", hidden_size, n_heads,
                                     linear_hidden_size, activation, dropout)
                       for i in range(encoder_layers)]
        self.head = Linear(spec, "head.linear", hidden_size * self.patch_num, h * self.n_outputs)

    def _patches(self, y: np.ndarray) -> np.ndarray:
        """(B, L) -> (B, patch_num, patch_len), after replicating the last value stride times."""
        padded = np.concatenate([y, np.repeat(y[:, -1:], self.stride, axis=1)], axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.patch_len, axis=1)
        return np.ascontiguousarray(windows[:, :: self.stride][:, : self.patch_num])

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data  # data: RevIN statistics are constants, as torch detaches them
        b = y.shape[0]
        if self.revin:
            last = y[:, -1:]
            std = np.sqrt(y.var(axis=1, keepdims=True) + REVIN_EPS).astype(y.dtype)
            y = (y - last) / std
        u = self.W_P(p, ops.constant(self._patches(y)))
        pos = p["backbone.W_pos"] if self.learn_pos_embed else ops.constant(
            self.constants["backbone.W_pos"])
        u = ops.dropout(ops.add(u, pos), self.dropout, rng)
        prev = None
        for layer in self.layers:
            u, prev = layer(p, u, prev, rng, self.res_attention)
        flat = ops.reshape(ops.transpose(u, (0, 2, 1)), (b, -1))  # channel-major, as torch
        out = ops.dropout(self.head(p, flat), self.head_dropout, rng)
        out = ops.reshape(out, (b, self.h, self.n_outputs))
        if self.revin:
            out = ops.add(ops.mul(out, ops.constant(std[:, :, None])),
                          ops.constant(last[:, :, None]))
        return out
