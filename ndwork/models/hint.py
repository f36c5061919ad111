"""HINT: hierarchical forecasts made coherent, NeuralForecast's wrapper of a model with a
distribution output. The model trains as itself; its forecast's sample paths are
reconciled across the series of the hierarchy (S P applied to every draw), so each
path, and the mean, adds up."""

from __future__ import annotations

import numpy as np


def bottom_up(S: np.ndarray) -> np.ndarray:
    """P taking each bottom series' own forecast: (bottom, all)."""
    n_all, n_bottom = S.shape
    P = np.zeros_like(S, dtype=float)
    P[n_all - n_bottom:] = S[n_all - n_bottom:]
    return P.T


def _min_trace(S: np.ndarray, W: np.ndarray) -> np.ndarray:
    """MinT's P = J - J W U (U' W U)^+ U' (Wickramasuriya et al., 2019), as NF writes it."""
    n_all, n_bottom = S.shape
    n_agg = n_all - n_bottom
    U = np.hstack((np.eye(n_agg), -S[:n_agg])).T
    J = np.hstack((np.zeros((n_bottom, n_agg)), np.eye(n_bottom)))
    return J - J @ W @ U @ np.linalg.pinv(U.T @ W @ U) @ U.T


def min_trace_ols(S: np.ndarray) -> np.ndarray:
    return _min_trace(S, np.eye(len(S)))


def min_trace_wls(S: np.ndarray) -> np.ndarray:
    """MinT with each series weighted by the number of bottom series it sums."""
    return _min_trace(S, np.diag(S @ np.ones(S.shape[1])))


RECONCILIATIONS = {"BottomUp": bottom_up, "MinTraceOLS": min_trace_ols,
                   "MinTraceWLS": min_trace_wls, "Identity": None}


def check_summing_matrix(S) -> np.ndarray:
    """S (all series, bottom series) of zeros and ones, the bottom series last."""
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[0] <= S.shape[1] or S.shape[1] < 1:
        raise ValueError(f"S must be a summing matrix (all series, bottom series) with more "
                         f"rows than columns, got shape {S.shape}; build it with "
                         f"ndwork.datasets.hierarchical_panel or hierarchicalforecast's "
                         f"aggregate.")
    if not np.isin(S, (0.0, 1.0)).all():
        raise ValueError("S must hold only 0 and 1 (which bottom series each series sums).")
    n_bottom = S.shape[1]
    if not np.array_equal(S[-n_bottom:], np.eye(n_bottom)):
        raise ValueError("S's last rows must be the identity: the bottom series come last, "
                         "in the data's order of unique_id (sorted), each summing itself.")
    return S


class HINT:
    """NeuralForecast's HINT(h, S, model, reconciliation, alias=None): `model` (any ndwork
    model with a DistributionLoss or mixture loss, as NeuralForecast requires) trains
    as itself on all series of the hierarchy; its forecasts are num_samples draws per
    point, reconciled with S P (reconciliation "BottomUp", "MinTraceOLS",
    "MinTraceWLS", or "Identity": none) before their mean and quantiles are taken.

    S: the summing matrix (all series, bottom series), rows in the data's series order
    (unique_id sorted), bottom series last. Every other attribute is the wrapped
    model's. The forecast column is "HINT" (or alias).
    """

    def __init__(self, h: int, S, model, reconciliation: str, alias: str | None = None):
        from ndwork.models import model_class

        if isinstance(model, dict):  # a checkpoint's {"class", "hyperparameters"}
            model = model_class(model["class"])(**model["hyperparameters"])
        if model.h != h:
            raise ValueError(f"HINT(h={h}) wraps a model with h={model.h}; give both the same "
                             f"horizon.")
        if not model.loss.is_distribution_output:
            raise ValueError(f"HINT reconciles sample paths, so its model needs a distribution "
                             f"output (as in NeuralForecast); train {model!r} with e.g. "
                             f"loss=DistributionLoss('Normal') instead of {model.loss!r}.")
        if reconciliation not in RECONCILIATIONS:
            raise ValueError(f"reconciliation={reconciliation!r} is not one NeuralForecast "
                             f"has; use one of {list(RECONCILIATIONS)}.")
        self.h, self.model, self.reconciliation, self.alias = h, model, reconciliation, alias
        self.S = check_summing_matrix(S)
        method = RECONCILIATIONS[reconciliation]
        self.SP = None if method is None else self.S @ method(self.S)

    def __getattr__(self, name):  # everything else is the wrapped model's
        model = self.__dict__.get("model")
        if model is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(model, name)

    def __repr__(self) -> str:
        return self.alias or "HINT"

    def hyperparameters(self) -> dict:
        return {"h": self.h, "S": self.S.tolist(), "reconciliation": self.reconciliation,
                "alias": self.alias, "model": {"class": type(self.model).__name__,
                                               "hyperparameters": self.model.hyperparameters()}}

    def check_series(self, n_series: int) -> None:
        if n_series != len(self.S):
            raise ValueError(f"HINT's S has {len(self.S)} rows (series) but the data has "
                             f"{n_series} series; give S one row per series, in the data's "
                             f"order of unique_id.")

    def reconcile(self, draws: np.ndarray) -> np.ndarray:
        """Draws (S * k, h, n), series-major (k windows per series) -> the same,
        reconciled across series: every draw coherent (S P y)."""
        if self.SP is None:
            return draws
        n = len(self.S)
        if len(draws) % n:
            raise ValueError(f"HINT reconciles whole hierarchies: {len(draws)} windows are not "
                             f"a whole number per series of its {n}.")
        grouped = draws.reshape(n, -1, *draws.shape[1:])
        reconciled = np.einsum("ij,jwhp->iwhp", self.SP, grouped.astype(np.float64))
        return reconciled.reshape(draws.shape).astype(draws.dtype)
