"""TFT: every input variable embedded and selected by gated networks (static ones give
the contexts), an LSTM (or GRU) encoder over the history and one over the known future,
then causal interpretable attention over both; the forecast reads the future steps."""

import warnings

import numpy as np
import pandas as pd

from ndwork.autodiff import ops
from ndwork.models.base import BaseModel
from ndwork.nn import LayerNorm, Linear, RecurrentStack
from ndwork.nn.tft import (
    ACTIVATIONS,
    GLU,
    GRN,
    LN_EPS,
    InterpretableAttention,
    StaticCovariateEncoder,
    VariableSelection,
)


class TFT(BaseModel):
    """Temporal Fusion Transformer (Lim et al., 2021) as NeuralForecast builds it.

    hidden_size, n_head, dropout; grn_activation (the gated residual networks'
    activation: ReLU, Softplus, Tanh, SELU, LeakyReLU, Sigmoid, ELU, GELU); rnn_type
    ("lstm" or "gru"), n_rnn_layers, one_rnn_initial_state (one static state for every
    layer); tgt_size must be 1. Without future exogenous variables the last observed
    value, repeated, is the known-future input, as in NeuralForecast. attn_dropout is not
    applied (flash attention never forms the probabilities). Training options: see
    `BaseModel`.

    Interpretability, as NeuralForecast's: after a prediction, `feature_importances()`,
    `attention_weights()` and `feature_importance_correlations()` describe the windows of
    the last forward (NeuralForecast's last batch); the attention matrix (input_size + h
    squared) is averaged over windows and heads chunk by chunk, never held per window.
    """

    EXOGENOUS_FUTR = EXOGENOUS_HIST = EXOGENOUS_STAT = True
    DEFAULTS = dict(max_steps=1000, learning_rate=1e-3, windows_batch_size=1024,
                    inference_windows_batch_size=1024, scaler_type="robust")

    def __init__(self, h: int, input_size: int, tgt_size: int = 1, hidden_size: int = 128,
                 n_head: int = 4, attn_dropout: float = 0.0, grn_activation: str = "ELU",
                 n_rnn_layers: int = 1, rnn_type: str = "lstm",
                 one_rnn_initial_state: bool = False, dropout: float = 0.1, **kwargs):
        super().__init__(h, input_size, **kwargs)
        if tgt_size != 1:
            raise ValueError(f"tgt_size={tgt_size!r}: ndwork's TFT forecasts one target "
                             f"column; use tgt_size=1.")
        if grn_activation not in ACTIVATIONS:
            raise ValueError(f"grn_activation={grn_activation!r} must be one of "
                             f"{list(ACTIVATIONS)} (NeuralForecast's; its GLU would halve the "
                             f"width the next layer reads).")
        cell = str(rnn_type).lower()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"rnn_type={rnn_type!r} must be 'lstm' or 'gru'.")
        if isinstance(n_rnn_layers, bool) or not isinstance(n_rnn_layers, int) or n_rnn_layers < 1:
            raise ValueError(f"n_rnn_layers={n_rnn_layers!r} must be a positive integer.")
        if attn_dropout:
            warnings.warn(f"attn_dropout={attn_dropout} is not applied: flash attention never "
                          f"forms the attention probabilities (dropout={dropout} still "
                          f"applies everywhere else).", UserWarning, stacklevel=2)
        self.tgt_size, self.hidden_size, self.n_head = tgt_size, hidden_size, n_head
        self.attn_dropout, self.grn_activation, self.n_rnn_layers = (attn_dropout,
                                                                     grn_activation,
                                                                     n_rnn_layers)
        self.rnn_type, self.one_rnn_initial_state, self.dropout = (rnn_type,
                                                                   one_rnn_initial_state, dropout)
        spec, d, act = self.spec, hidden_size, grn_activation
        futr = max(self.futr_exog_size, 1)  # without any: the repeated last value
        self.variable_embeddings = {}
        for kind, size in (("stat", self.stat_exog_size), ("futr", futr),
                           ("hist", self.hist_exog_size), ("tgt", tgt_size)):
            if size:
                prefix = f"embedding.{kind}_exog_embedding" if kind != "tgt" else \
                    "embedding.tgt_embedding"
                std = np.sqrt(2 / (size + d))  # torch's xavier_normal_
                self.variable_embeddings[kind] = (spec.add(f"{prefix}_vectors", (size, d), "normal", std),
                                         spec.add(f"{prefix}_bias", (size, d), "constant", 0.0))
        self.static_encoder = StaticCovariateEncoder(
            spec, "static_encoder", d, self.stat_exog_size, dropout, act, cell, n_rnn_layers,
            one_rnn_initial_state) if self.stat_exog_size else None
        name = "temporal_encoder"
        self.history_vsn = VariableSelection(spec, f"{name}.history_vsn", d,
                                             futr + self.hist_exog_size + tgt_size, dropout, act)
        self.history_encoder = RecurrentStack(spec, f"{name}.history_encoder", cell, d, d,
                                              n_rnn_layers)
        self.future_encoder = RecurrentStack(spec, f"{name}.future_encoder", cell, d, d,
                                             n_rnn_layers)
        self.future_vsn = VariableSelection(spec, f"{name}.future_vsn", d, futr, dropout, act)
        self.input_gate = GLU(spec, f"{name}.input_gate", d, d)
        self.input_gate_ln = LayerNorm(spec, f"{name}.input_gate_ln", d)
        name = "temporal_fusion_decoder"
        self.enrichment = GRN(spec, f"{name}.enrichment_grn", d, d, context_size=d,
                              dropout=dropout, activation_name=act)
        self.attention = InterpretableAttention(spec, f"{name}.attention", n_head, d, dropout)
        self.attention_gate = GLU(spec, f"{name}.attention_gate", d, d)
        self.attention_ln = LayerNorm(spec, f"{name}.attention_ln", d)
        self.positionwise = GRN(spec, f"{name}.positionwise_grn", d, d, dropout=dropout,
                                activation_name=act)
        self.decoder_gate = GLU(spec, f"{name}.decoder_gate", d, d)
        self.decoder_ln = LayerNorm(spec, f"{name}.decoder_ln", d)
        self.output_adapter = Linear(spec, "output_adapter", d, self.n_outputs)
        self.interpretability_params: dict = {}
        self._queries_keys = None  # of the last forward, for attention_weights()

    def _embed(self, p, kind: str, values: np.ndarray):
        """values (..., V) -> (..., V, D): each variable times its vector, plus its bias."""
        vectors, bias = (p[n] for n in self.variable_embeddings[kind])
        return ops.add(ops.mul(ops.constant(values[..., None]), vectors), bias)

    @staticmethod
    def _norm(p, norm, x):
        return ops.layernorm(x, p[norm.gamma], p[norm.beta], LN_EPS)

    def forward(self, p, batch, rng=None):
        y = batch["insample_y"].data  # (B, L)
        length = self.input_size
        futr = batch["futr_exog"]
        futr = np.repeat(y[:, -1:, None], length + self.h, axis=1) if futr is None else \
            ops.values(futr)
        known = self._embed(p, "futr", futr)  # (B, L + h, F, D)
        historical = [ops.index(known, (slice(None), slice(0, length))),
                      self._embed(p, "tgt", y[..., None])]
        if self.hist_exog_size:
            historical.insert(0, self._embed(p, "hist", ops.values(batch["hist_exog"])))
        cs = ce = states = None
        static_weights = None
        if self.static_encoder is not None:
            statics = self._embed(p, "stat", ops.values(batch["stat_exog"]))
            cs, ce, states, static_weights = self.static_encoder(p, statics, rng)
        past, past_weights = self.history_vsn(p, ops.concat(historical, axis=2), rng, cs)
        future, future_weights = self.future_vsn(
            p, ops.index(known, (slice(None), slice(length, None))), rng, cs)
        history, handed_on = self.history_encoder.run_from(p, past, states)
        ahead, _ = self.future_encoder.run_from(p, future, handed_on)
        temporal = self._norm(p, self.input_gate_ln, ops.add(
            self.input_gate(p, ops.concat([history, ahead], axis=1)),
            ops.concat([past, future], axis=1)))
        enriched = self.enrichment(p, temporal, rng, ce)
        tail = (slice(None), slice(length, None))
        attended, queries_keys = self.attention(p, enriched, rng)
        x = ops.index(attended, tail)
        x = self._norm(p, self.attention_ln, ops.add(self.attention_gate(p, x),
                                                     ops.index(enriched, tail)))
        x = self.positionwise(p, x, rng)
        x = self._norm(p, self.decoder_ln, ops.add(self.decoder_gate(p, x),
                                                   ops.index(temporal, tail)))
        if rng is None:
            self.interpretability_params = {
                "history_vsn_wgts": past_weights.data.mean(axis=0),
                "future_vsn_wgts": future_weights.data.mean(axis=0),
                "static_encoder_sparse_weights": None if static_weights is None else
                static_weights.data.mean(axis=0),
                "attn_wts": None}  # from these on request: predict need not pay for it
            self._queries_keys = queries_keys
        return self.output_adapter(p, x)

    # --- interpretability, NeuralForecast's methods ---------------------------------------
    def _recorded(self) -> dict:
        if not self.interpretability_params:
            raise ValueError("No interpretability_params. Make a prediction using the model to "
                             "generate them.")
        return self.interpretability_params

    def feature_importances(self) -> dict[str, pd.DataFrame]:
        """Variable selection weights of the last forward's windows, averaged: past
        (input_size x variables), future (h x future variables) and static ones."""
        recorded = self._recorded()
        # the order the history's variables are stacked in (NeuralForecast labels the two
        # columns without future variables the other way round: see the README)
        known = list(self.futr_exog_list) or ["repeated_target"]
        past = list(self.hist_exog_list) + known + ["observed_target"]
        importances = {"Past variable importance over time": pd.DataFrame(
            recorded["history_vsn_wgts"], columns=past)}
        if self.futr_exog_size:
            importances["Future variable importance over time"] = pd.DataFrame(
                recorded["future_vsn_wgts"], columns=list(self.futr_exog_list))
        if self.stat_exog_size:
            importances["Static covariates"] = pd.DataFrame(
                recorded["static_encoder_sparse_weights"], index=list(self.stat_exog_list),
                columns=["importance"]).sort_values(by="importance")
        return importances

    def attention_weights(self) -> np.ndarray:
        """(input_size + h) x (input_size + h) causal attention, averaged over the last
        forward's windows and the heads."""
        recorded = self._recorded()
        if recorded["attn_wts"] is None:
            recorded["attn_wts"] = InterpretableAttention.probabilities(*self._queries_keys)
            self._queries_keys = None
        return recorded["attn_wts"]

    def feature_importance_correlations(self) -> pd.DataFrame:
        """Spearman correlations between the past variables' importances and the mean
        attention the forecast steps pay to each past step."""
        attention = self.attention_weights()[self.input_size:, :].mean(axis=0)
        past = self.feature_importances()["Past variable importance over time"]
        past["Correlation with Mean Attention"] = attention[:self.input_size]
        return past.corr(method="spearman").round(2)
