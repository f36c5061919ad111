"""What every model shares: hyper-parameters, capability flags, parameter spec.

A model file holds only its architecture: it declares parameters in `self.spec`
(and fixed arrays in `self.constants`) and implements `forward(p, batch, rng)`
returning (B, h, loss.outputsize_multiplier). Windowing, scaling, training and
prediction live once, in ndwork.data and ndwork.training.
"""

from __future__ import annotations

import inspect

import numpy as np

from ndwork.autodiff.tensor import Tensor
from ndwork.losses import MAE, Loss, loss_from_config
from ndwork.nn import ParameterSpec

# NeuralForecast's training hyper-parameters and their defaults; a model overrides
# defaults in its class attribute DEFAULTS (NHITS decays its learning rate 3 times).
TRAINING_DEFAULTS = dict(
    loss=None,
    valid_loss=None,
    max_steps=1000,
    learning_rate=1e-3,
    num_lr_decays=-1,
    early_stop_patience_steps=-1,
    val_check_steps=100,
    batch_size=32,
    valid_batch_size=None,
    windows_batch_size=1024,
    inference_windows_batch_size=-1,
    step_size=1,
    scaler_type="identity",
    random_seed=1,
    alias=None,
    futr_exog_list=None,
    hist_exog_list=None,
    stat_exog_list=None,
    exclude_insample_y=False,
    optimizer="adam",
    optimizer_kwargs=None,
    enable_progress_bar=True,
)
# Lightning trainer options NeuralForecast users pass; they have no meaning here.
IGNORED_TRAINER_OPTIONS = {"accelerator", "devices", "logger", "enable_checkpointing",
                           "enable_model_summary", "precision"}
OPTIMIZERS = ("adam", "adamw", "sgd")
ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def activation_name(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class BaseModel:
    """Training hyper-parameters, as in NeuralForecast:

    h: forecast horizon. input_size: autoregressive inputs (lags).
    loss / valid_loss: training and validation losses (ndwork.losses; valid defaults to loss).
    max_steps: training steps. learning_rate: Adam's step size.
    num_lr_decays: halvings of the learning rate spread evenly over max_steps (-1: none).
    early_stop_patience_steps: validation checks without improvement before stopping (-1: off).
    val_check_steps: steps between validation checks.
    batch_size: series per step. windows_batch_size: windows sampled per step.
    valid_batch_size / inference_windows_batch_size: series / windows per inference chunk.
    step_size: distance between consecutive windows. scaler_type: identity, standard,
    robust or minmax, applied per window. random_seed: seeds initialization and sampling.
    alias: the model's column name. futr_exog_list, hist_exog_list, stat_exog_list:
    exogenous columns. exclude_insample_y: ignore the target's own lags.
    optimizer: "adam", "adamw" or "sgd"; optimizer_kwargs: its extra arguments.
    enable_progress_bar: tqdm bar during fit (NeuralForecast's trainer option).
    """

    EXOGENOUS_FUTR = False
    EXOGENOUS_HIST = False
    EXOGENOUS_STAT = False
    # A multivariate model sees the windows of all n_series series at one time offset,
    # as consecutive rows of the batch (window-major), and mixes them.
    MULTIVARIATE = False
    DEFAULTS: dict = {}

    def __init__(self, h: int, input_size: int, **kwargs):
        self.h = _positive_int("h", h)
        self.input_size = _positive_int("input_size", input_size)
        unknown = set(kwargs) - set(TRAINING_DEFAULTS) - IGNORED_TRAINER_OPTIONS
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unknown option(s) {sorted(unknown)}; "
                f"its options are {self._architecture_names() + sorted(TRAINING_DEFAULTS)}."
            )
        settings = {**TRAINING_DEFAULTS, **self.DEFAULTS,
                    **{k: v for k, v in kwargs.items() if k in TRAINING_DEFAULTS}}
        for name, value in settings.items():
            setattr(self, name, value)
        self.loss: Loss = self.loss if self.loss is not None else MAE()
        if isinstance(self.loss, dict):
            self.loss = loss_from_config(self.loss)
        if isinstance(self.valid_loss, dict):
            self.valid_loss = loss_from_config(self.valid_loss)
        for name in ("loss", "valid_loss"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Loss):
                raise ValueError(f"{name} must be an ndwork.losses loss such as MAE(), got {value!r}.")
        for name in ("max_steps", "batch_size", "windows_batch_size", "step_size",
                     "val_check_steps"):
            _positive_int(name, getattr(self, name))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not known; use one of {OPTIMIZERS}.")
        from ndwork.kernels.scalers import SCALERS

        if self.scaler_type not in SCALERS:
            raise ValueError(f"scaler_type {self.scaler_type!r} is not known; use one of {SCALERS}.")
        self.futr_exog_list = list(self.futr_exog_list or [])
        self.hist_exog_list = list(self.hist_exog_list or [])
        self.stat_exog_list = list(self.stat_exog_list or [])
        for kind, flag in (("futr", self.EXOGENOUS_FUTR), ("hist", self.EXOGENOUS_HIST),
                           ("stat", self.EXOGENOUS_STAT)):
            if getattr(self, f"{kind}_exog_list") and not flag:
                raise ValueError(f"{type(self).__name__} does not support {kind}_exog_list; "
                                 f"use a model that does (MLP, NHITS, NBEATSx, TiDE).")
        self.spec = ParameterSpec()
        self.constants: dict[str, np.ndarray] = {}

    # --- sizes the architecture needs --------------------------------------------
    @property
    def n_outputs(self) -> int:
        return self.loss.outputsize_multiplier

    @property
    def futr_exog_size(self) -> int:
        return len(self.futr_exog_list)

    @property
    def hist_exog_size(self) -> int:
        return len(self.hist_exog_list)

    @property
    def stat_exog_size(self) -> int:
        return len(self.stat_exog_list)

    def forward(self, p: dict[str, Tensor], batch: dict, rng=None) -> Tensor:
        """(parameters, windows batch) -> forecast (B, h, n_outputs); rng only in training."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        """Trainable parameters plus fixed bases, as torch's `model.parameters()` counts."""
        trainable = sum(int(np.prod(s)) for s in self.spec.shapes.values())
        return trainable + sum(c.size for c in self.constants.values())

    # --- configuration -----------------------------------------------------------
    @classmethod
    def _architecture_names(cls) -> list[str]:
        names = inspect.signature(cls.__init__).parameters
        return [n for n, prm in names.items() if n != "self" and prm.kind is prm.POSITIONAL_OR_KEYWORD]

    def hyperparameters(self) -> dict:
        """Everything needed to rebuild this model, JSON-serializable."""
        config = {name: getattr(self, name) for name in self._architecture_names()}
        for name in TRAINING_DEFAULTS:
            value = getattr(self, name)
            config[name] = value.config() if isinstance(value, Loss) else value
        return config

    def __repr__(self) -> str:
        return self.alias or type(self).__name__
