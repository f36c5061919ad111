"""TimeXer: each series' window cut into patch tokens plus one learned global token;
the patches attend to each other, the global token also to the exogenous variates (one
token per series and per exogenous variable, the inverted embedding of iTransformer)."""

import numpy as np

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel, n_series_option
from ndwork.nn import LayerNorm, Linear
from ndwork.nn.multivariate import (
    exog_series_last,
    instance_statistics,
    per_window,
    series_outputs,
)
from ndwork.nn.transformer import FeedForward, MultiHeadAttention, sinusoidal_positions


class EncoderLayer:
    """Self-attention over one series' tokens; its global token (the last) then attends
    to the window's exogenous tokens; feed-forward; post-norm throughout."""

    def __init__(self, spec, name, hidden_size, n_heads, d_ff, dropout):
        self.self_attention = MultiHeadAttention(spec, f"{name}.self_attention", hidden_size,
                                                 n_heads)
        self.cross_attention = MultiHeadAttention(spec, f"{name}.cross_attention", hidden_size,
                                                  n_heads)
        self.ffn = FeedForward(spec, name, hidden_size, d_ff, "relu", dropout)
        self.norms = [LayerNorm(spec, f"{name}.norm{i}", hidden_size) for i in (1, 2, 3)]
        self.dropout = dropout

    def __call__(self, p, x, cross, rng):
        """x (W * N, P + 1, D) series tokens, cross (W, C, D) exogenous tokens."""
        drop, (rows, tokens, d), w = self.dropout, x.shape, cross.shape[0]
        x = self.norms[0](p, ops.add(x, ops.dropout(self.self_attention(p, x, x), drop, rng)))
        patches = ops.index(x, (slice(None), slice(0, tokens - 1)))
        glb = ops.index(x, (slice(None), slice(tokens - 1, tokens)))  # (W * N, 1, D)
        attended = self.cross_attention(p, ops.reshape(glb, (w, rows // w, d)), cross)
        glb = self.norms[1](p, ops.add(glb, ops.reshape(ops.dropout(attended, drop, rng),
                                                        (rows, 1, d))))
        x = ops.concat([patches, glb], axis=1)
        return self.norms[2](p, ops.add(x, self.ffn(p, x, rng)))


class TimeXer(BaseModel):
    """TimeXer (Wang et al., 2024) as NeuralForecast builds it, multivariate: the
    `n_series` series must be aligned.

    patch_len: the window is cut into input_size // patch_len patches from its start
    (NeuralForecast's unfold: steps past the last whole patch are not read);
    hidden_size, n_heads, e_layers, d_ff (feed-forward width), dropout; use_norm:
    normalize each series' window by its mean and deviation. factor is accepted and
    unused, as in NeuralForecast. Historical and static exogenous variables become
    tokens the global tokens attend to. Training options: see `BaseModel`.
    """

    EXOGENOUS_HIST = EXOGENOUS_STAT = EXOGENOUS_CAT = True
    MULTIVARIATE = True
    DEFAULTS = dict(max_steps=1000, learning_rate=1e-3, windows_batch_size=32,
                    inference_windows_batch_size=32)

    def __init__(self, h: int, input_size: int, n_series: int, patch_len: int = 16,
                 hidden_size: int = 512, n_heads: int = 8, e_layers: int = 2, d_ff: int = 2048,
                 factor: int = 1, dropout: float = 0.1, use_norm: bool = True, **kwargs):
        super().__init__(h, input_size, **kwargs)
        self.n_series = n_series_option(n_series)
        if isinstance(patch_len, bool) or not isinstance(patch_len, int) or \
                not 1 <= patch_len <= input_size:
            raise ValueError(f"patch_len={patch_len!r} must be an integer between 1 and "
                             f"input_size={input_size} (the window is cut into whole patches).")
        self.patch_len, self.hidden_size, self.n_heads = patch_len, hidden_size, n_heads
        self.e_layers, self.d_ff, self.factor = e_layers, d_ff, factor
        self.dropout, self.use_norm = dropout, use_norm
        self.patch_num = input_size // patch_len
        spec = self.spec
        self.patch_embedding = Linear(spec, "en_embedding.value_embedding", patch_len,
                                      hidden_size, bias=False)
        self.global_token = spec.add("en_embedding.glb_token", (n_series, hidden_size),
                                     "normal", 1.0)
        self.exog_embedding = Linear(spec, "ex_embedding.value_embedding", input_size,
                                     hidden_size)
        self.encoder = [EncoderLayer(spec, f"encoder.layers.{i}", hidden_size, n_heads, d_ff,
                                     dropout) for i in range(e_layers)]
        self.encoder_norm = LayerNorm(spec, "encoder.norm", hidden_size)
        self.head = Linear(spec, "head.linear", hidden_size * (self.patch_num + 1),
                           h * self.n_outputs)

    def _exogenous_tokens(self, y: np.ndarray, batch) -> np.ndarray:
        """(W, C, L): each series' window, then each historical variable of each series
        (variable-major), then each series' statics repeated over the window, as
        NeuralForecast's inverted embedding reads them."""
        n, w = self.n_series, y.shape[0] // self.n_series
        tokens = [y.reshape(w, n, -1)]
        if self.hist_exog_size:  # (W, F, L, N) -> (W, F * N, L)
            hist = exog_series_last(batch["hist_exog"], n).data
            tokens.append(hist.transpose(0, 1, 3, 2).reshape(w, -1, hist.shape[2]))
        if self.stat_exog_size:  # NeuralForecast's batch holds the statics of one window
            stat = per_window(batch["stat_exog"], n).data[0].reshape(-1)
            tokens.append(np.broadcast_to(stat[None, :, None], (w, stat.size, y.shape[1])))
        return np.concatenate(tokens, axis=1).astype(y.dtype, copy=False)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data  # (W * N, L)
        n, d, patches = self.n_series, self.hidden_size, self.patch_num
        w = y.shape[0] // n
        if self.use_norm:
            stats = instance_statistics(y, axis=1)
            y = (y - stats[0]) / stats[1]
        cuts = y[:, :patches * self.patch_len].reshape(-1, patches, self.patch_len)
        positions = sinusoidal_positions(patches, d).astype(y.dtype, copy=False)
        x = ops.add(self.patch_embedding(p, ops.constant(cuts)), ops.constant(positions))
        glb = ops.broadcast(ops.reshape(p[self.global_token], (1, n, 1, d)), (w, n, 1, d))
        x = ops.concat([ops.reshape(x, (w, n, patches, d)), glb], axis=2)
        x = ops.dropout(ops.reshape(x, (w * n, patches + 1, d)), self.dropout, rng)
        cross = ops.dropout(self.exog_embedding(p, ops.constant(self._exogenous_tokens(y, batch))),
                            self.dropout, rng)
        for layer in self.encoder:
            x = layer(p, x, cross, rng)
        x = self.encoder_norm(p, x)  # (W * N, P + 1, D) -> each series' (D, P + 1) flattened
        flat = ops.reshape(ops.transpose(ops.reshape(x, (w * n, patches + 1, d)), (0, 2, 1)),
                           (w, n, d * (patches + 1)))
        out = ops.dropout(self.head(p, flat), self.dropout, rng)  # (W, N, h * Q)
        if self.use_norm:
            out = ops.add(ops.mul(out, ops.constant(stats[1].reshape(w, n, 1))),
                          ops.constant(stats[0].reshape(w, n, 1)))
        # NeuralForecast's (W, h * Q, N) read as (W, h, Q * N), then split by its loss as
        # (W, h, N, Q): with several outputs per step, its series and outputs interleave
        out = ops.reshape(ops.transpose(out, (0, 2, 1)), (w, self.h, -1))
        return series_outputs(out, n, self.n_outputs)
