"""What every model shares: hyper-parameters, capability flags, parameter spec.

A model file holds only its architecture: it declares parameters in `self.spec`
(and fixed arrays in `self.constants`) and implements `forward(p, batch, rng)`
returning (B, h, loss.outputsize_multiplier). Windowing, scaling, training and
prediction live once, in ndwork.data and ndwork.training.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import warnings

import numpy as np

from ndwork.autodiff.tensor import Tensor
from ndwork.losses import MAE, Loss, loss_from_config
from ndwork.nn import ExogEmbeddings, ParameterSpec, categorical_embedding_size

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
    val_monitor="ptl/val_loss",
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
    cat_exog_list=None,
    categorical_cardinalities=None,
    cat_emb_dim="fastai",
    exclude_insample_y=False,
    optimizer="adam",
    optimizer_kwargs=None,
    lr_scheduler=None,
    lr_scheduler_kwargs=None,
    dataloader_kwargs=None,
    drop_last_loader=False,
    start_padding_enabled=False,
    training_data_availability_threshold=0.0,
    enable_progress_bar=True,
    # Lightning's trainer options NeuralForecast passes on: gradient clipping
    gradient_clip_val=None,
    gradient_clip_algorithm="norm",
    # ndwork's, for multivariate models: NeuralForecast's loader presents a training
    # step's series in a random order; ndwork keeps them in place unless this is True
    shuffle_series=False,
)
# Lightning trainer options NeuralForecast scripts pass. `precision` maps onto
# Optimizations.precision; each other one warns once, naming what does its job here.
_PARALLELISM = ("ndwork trains on the CPU: ndwork.optimizations(threads=...) and "
                "fit(distributed=...) set its parallelism")
# why NeuralForecast's data loader options (a model's dataloader_kwargs, a call's
# **data_kwargs) change nothing here
NO_DATA_LOADER = ("ndwork has no data loader (windows are gathered from arrays in the "
                  "training process), so data loader options do nothing here")
UNSUPPORTED_TRAINER_OPTIONS = {
    "accelerator": _PARALLELISM,
    "devices": _PARALLELISM,
    "strategy": _PARALLELISM,
    "logger": "fit(callback=...) sees every step's losses, and nf.states[i].train_losses "
              "and .valid_losses keep them",
    "enable_checkpointing": "fit(checkpoint_every=..., checkpoint_path=...) writes checkpoints",
    "enable_model_summary": "model.num_parameters() counts the parameters",
    "deterministic": "ndwork's training repeats exactly under random_seed",
    "benchmark": "ndwork's kernels pick what measured fastest by themselves",
    "callbacks": "fit(callback=...) runs a function after every step",
    "log_every_n_steps": "fit(callback=...) sees every step's losses",
    "num_sanity_val_steps": "ndwork checks the data before training",
    "check_val_every_n_epoch": "val_check_steps sets the validation checks",
    "val_check_interval": "val_check_steps sets the validation checks",
    "accumulate_grad_batches": "windows_batch_size sets the windows a step averages over",
    "inference_mode": "forecasts never record a graph",
}
# Lightning's precision (or ndwork's own name) -> Optimizations.precision, for the
# precisions ndwork has
LIGHTNING_PRECISIONS = {32: "fp32", "32": "fp32", "32-true": "fp32", "fp32": "fp32",
                        64: "fp64", "64": "fp64", "64-true": "fp64", "fp64": "fp64",
                        "bf16-mixed": "bf16", "bf16": "bf16", "16-mixed": "fp16", 16: "fp16",
                        "16": "fp16", "fp16": "fp16", "auto": "auto"}
# Lightning's "true" low precisions keep the weights themselves in it; ndwork keeps
# float32 master weights always, so these train as the mixed ones (and say so)
TRUE_PRECISIONS = {"bf16-true": "bf16", "16-true": "fp16"}
OPTIMIZERS = ("adam", "adamw", "sgd")
ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "GELU": "gelu", "ELU": "elu"}


def activation_name(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; use one of {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _precision(value) -> str | None:
    """Lightning's `precision` as an Optimizations.precision (None: not given)."""
    if value is None or value in LIGHTNING_PRECISIONS:
        return LIGHTNING_PRECISIONS.get(value)
    if value in TRUE_PRECISIONS:
        mixed = TRUE_PRECISIONS[value]
        warnings.warn(f"precision={value!r}: ndwork keeps float32 master weights, so this "
                      f"model trains as precision={mixed!r} (mixed: GEMMs and activations in "
                      f"{mixed}); pass precision={mixed!r} to say so.", UserWarning, stacklevel=4)
        return mixed
    raise ValueError(f"precision={value!r} is not a precision ndwork knows; use one of "
                     f"{sorted(map(str, LIGHTNING_PRECISIONS))} (Lightning's names) or leave it out.")


def _family(loss: Loss) -> dict:
    """A loss's configuration without what only changes its reported outputs."""
    outputs = ("level", "quantiles", "num_samples", "return_params", "horizon_weight")
    return {k: v for k, v in loss.config().items() if k not in outputs}


def _fractions(value) -> list[float]:
    """training_data_availability_threshold as NeuralForecast takes it: a fraction for
    both the inputs and the horizon, or one for each."""
    pair = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, float | np.floating)
                             or not 0.0 <= v <= 1.0 for v in pair):
        raise ValueError(f"training_data_availability_threshold={value!r} must be a float in "
                         f"[0, 1] or a pair of them (inputs, horizon), e.g. 0.5 or [0.5, 1.0]; "
                         f"an integer such as 1 is refused as in NeuralForecast: write 1.0.")
    return [float(v) for v in pair]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def n_series_option(n_series) -> int:
    """A multivariate model's n_series, checked."""
    if isinstance(n_series, bool) or not isinstance(n_series, int | np.integer) or n_series < 1:
        raise ValueError(f"n_series must be a positive integer (the number of series "
                         f"in the data), got {n_series!r}.")
    return int(n_series)


class BaseModel:
    """Training hyper-parameters, as in NeuralForecast:

    h: forecast horizon. input_size: autoregressive inputs (lags).
    loss / valid_loss: training and validation losses (ndwork.losses; valid defaults to loss).
    max_steps: training steps. learning_rate: Adam's step size.
    num_lr_decays: halvings of the learning rate spread evenly over max_steps (-1: none).
    early_stop_patience_steps: validation checks without improvement before stopping (-1: off).
    val_monitor: what early stopping watches (NeuralForecast's names): "ptl/val_loss" or
    "valid_loss" (the validation loss), "train_loss" (the training loss at each check).
    val_check_steps: steps between validation checks.
    batch_size: series per step. windows_batch_size: windows sampled per step.
    valid_batch_size / inference_windows_batch_size: at most this many series / windows
    per forward in validation and predict (None / -1: all at once; bounds memory).
    step_size: distance between consecutive windows. scaler_type: identity, standard,
    robust, minmax, minmax1, invariant or revin, applied per window (NeuralForecast's).
    random_seed: seeds initialization and sampling.
    alias: the model's column name. futr_exog_list, hist_exog_list, stat_exog_list:
    exogenous columns. cat_exog_list: those of them that are categorical (any values,
    coded at fit; unseen ones at predict map to the mean embedding), each embedded in
    cat_emb_dim dimensions ("fastai", "sqrt", "half" or an integer) from
    categorical_cardinalities {column: number of categories} (NeuralForecast's, on the
    models that have EXOGENOUS_CAT). exclude_insample_y: ignore the target's own lags.
    optimizer: "adam", "adamw" or "sgd"; optimizer_kwargs: its extra arguments.
    lr_scheduler: None (NeuralForecast's StepLR from num_lr_decays), one of PyTorch's
    schedulers by name or class (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
    LinearLR, ConstantLR) with lr_scheduler_kwargs, or a function step -> factor of the
    learning rate (LambdaLR's); stepped every training step, as NeuralForecast.
    start_padding_enabled: also train on the windows that start before a series (its
    first input_size - 1 points padded with zeros, masked out of the scaler), so series
    shorter than input_size train and forecast. training_data_availability_threshold:
    the fraction of a training window's inputs and of its horizon that must be real
    data (one float for both, or [inputs, horizon]; NeuralForecast's, default 0.0: at
    least one point each).
    drop_last_loader: skip each epoch's last batch of series when it is smaller than
    batch_size (NeuralForecast's; by default it trains on it).
    dataloader_kwargs: accepted; ndwork has no data loader (batches are gathered from
    arrays in the training process), so its options do nothing and say so.
    enable_progress_bar: tqdm bar during fit (NeuralForecast's trainer option).
    gradient_clip_val, gradient_clip_algorithm (Lightning's, which NeuralForecast passes
    on): before each update, scale the whole gradient to an L2 norm of at most the value
    ("norm", torch's clip_grad_norm_) or clamp each entry to +- the value ("value");
    None or 0: no clipping.
    shuffle_series (multivariate models, ndwork's option): train each step on the series
    in a new random order, as NeuralForecast's data loader presents them (default False:
    every series keeps its position, which the models' per-series weights assume).
    precision: Lightning's precision ("32-true", "bf16-mixed", "16-mixed", ...) or
    ndwork's ("fp32", "bf16", "fp16", "auto"), trained and forecast under the matching
    Optimizations.precision; other Lightning trainer options warn once and are unused.
    """

    EXOGENOUS_FUTR = False
    EXOGENOUS_HIST = False
    EXOGENOUS_STAT = False
    EXOGENOUS_CAT = False  # embeds categorical exogenous columns (cat_exog_list)
    # A multivariate model sees the windows of all n_series series at one time offset,
    # as consecutive rows of the batch (window-major), and mixes them.
    MULTIVARIATE = False
    # NeuralForecast's recurrent and convolutional models default to input_size=-1,
    # meaning 3 * h
    INPUT_SIZE_FROM_HORIZON = False
    # A model whose distribution forecasts are sample paths (DeepAR): it has
    # sample_paths(p, batch, n, rng) and trajectory_samples
    TRAJECTORIES = False
    DEFAULTS: dict = {}

    def __init__(self, h: int, input_size: int, **kwargs):
        self.h = _positive_int("h", h)
        if self.INPUT_SIZE_FROM_HORIZON and isinstance(input_size, int) and input_size < 1:
            warnings.warn(f"{type(self).__name__}(input_size={input_size}): using 3 * h = "
                          f"{3 * self.h} input steps, as NeuralForecast does.", UserWarning,
                          stacklevel=3)
            input_size = 3 * self.h
        self.input_size = _positive_int("input_size", input_size)
        self.precision = _precision(kwargs.pop("precision", None))
        for name in set(kwargs) & set(UNSUPPORTED_TRAINER_OPTIONS):
            kwargs.pop(name)
            warnings.warn(f"{type(self).__name__}({name}=...) is a Lightning trainer option "
                          f"ndwork does not use: {UNSUPPORTED_TRAINER_OPTIONS[name]}.",
                          UserWarning, stacklevel=3)
        unknown = set(kwargs) - set(TRAINING_DEFAULTS)
        if unknown:
            options = self._architecture_names() + sorted(TRAINING_DEFAULTS)
            close = {name: difflib.get_close_matches(name, options, n=1) for name in sorted(unknown)}
            hints = "".join(f" {name!r}: did you mean {match[0]!r}?"
                            for name, match in close.items() if match)
            raise ValueError(
                f"{type(self).__name__} got unknown option(s) {sorted(unknown)};{hints} "
                f"its options are {options}."
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
            if getattr(value, "metric_only", False):
                raise ValueError(f"{name}={value!r} is a metric that needs a benchmark forecast; "
                                 f"train and validate with MSE() and compare afterwards with "
                                 f"{type(value).__name__}().metric(y, y_hat, y_benchmark).")
        if (self.valid_loss is not None and self.valid_loss.is_distribution_output
                and _family(self.valid_loss) != _family(self.loss)):
            raise ValueError(f"valid_loss={self.valid_loss!r} scores a distribution the model "
                             f"must output: train with the same loss ({self.valid_loss!r}) or "
                             f"validate with a point or quantile loss such as MAE().")
        if self.shuffle_series and not self.MULTIVARIATE:
            raise ValueError(f"shuffle_series=True permutes the series a multivariate model "
                             f"mixes; {type(self).__name__} forecasts each series alone, so "
                             f"leave it out.")
        for name in ("max_steps", "batch_size", "windows_batch_size", "step_size",
                     "val_check_steps"):
            _positive_int(name, getattr(self, name))
        if self.valid_batch_size is not None:
            _positive_int("valid_batch_size", self.valid_batch_size)
        self._check_scheduler()
        clip = self.gradient_clip_val
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float)
                                 or not clip >= 0):
            raise ValueError(f"gradient_clip_val={clip!r} must be a non-negative number (0 or "
                             f"None: no clipping).")
        if self.gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm={self.gradient_clip_algorithm!r} must be "
                             f"'norm' or 'value' (Lightning's).")
        monitors = ("ptl/val_loss", "valid_loss", "train_loss")
        if self.val_monitor not in monitors:
            raise ValueError(f"val_monitor={self.val_monitor!r} is not supported; use one of "
                             f"{list(monitors)} (NeuralForecast's).")
        self.training_data_availability_threshold = _fractions(
            self.training_data_availability_threshold)
        if self.dataloader_kwargs:
            warnings.warn(f"{type(self).__name__}(dataloader_kwargs={self.dataloader_kwargs!r}): "
                          f"{NO_DATA_LOADER}.", UserWarning, stacklevel=3)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not known; use one of {OPTIMIZERS}.")
        from ndwork.data.windows import WINDOW_SCALERS

        if self.scaler_type not in WINDOW_SCALERS:
            raise ValueError(f"scaler_type {self.scaler_type!r} is not known; use one of "
                             f"{list(WINDOW_SCALERS)}.")
        if self.scaler_type == "revin" and self.loss.is_distribution_output:
            raise ValueError(f"scaler_type='revin' with {self.loss!r}: ndwork cannot train "
                             f"RevIN's learnable shift and scale through a distribution's "
                             f"likelihood; use scaler_type='standard' (RevIN's statistics).")
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
        self.embeddings = self._categorical_embeddings()
        self.loss.build(self.spec)  # a loss with its own layers (IQLoss) trains with the model
        if self.scaler_type == "revin":  # NeuralForecast's RevIN: a learnable shift and scale
            self.spec.add("scaler.revin_bias", (1,), "constant", 0.0)
            self.spec.add("scaler.revin_weight", (1,), "constant", 1.0)

    # --- sizes the architecture needs --------------------------------------------
    @property
    def n_outputs(self) -> int:
        return self.loss.outputsize_multiplier

    @property
    def futr_exog_size(self) -> int:
        return self._exog_size("futr")

    @property
    def hist_exog_size(self) -> int:
        return self._exog_size("hist")

    @property
    def stat_exog_size(self) -> int:
        return self._exog_size("stat")

    def _exog_size(self, stream: str) -> int:
        """A stream's width as the model reads it (categorical columns embedded)."""
        if stream in self.embeddings:
            return self.embeddings[stream].size
        return len(getattr(self, f"{stream}_exog_list"))

    def _categorical_embeddings(self) -> dict:
        """The embedding tables of the categorical columns, checked as NeuralForecast
        checks them, per stream that has some."""
        self.cat_exog_list = list(self.cat_exog_list or [])
        self.categorical_cardinalities = dict(self.categorical_cardinalities or {})
        cats = self.cat_exog_list
        if not cats:
            return {}
        name = type(self).__name__
        if not self.EXOGENOUS_CAT:
            raise ValueError(f"{name} does not embed categorical exogenous variables (as in "
                             f"NeuralForecast); use MLP, NHITS, NBEATSx, TiDE or another model "
                             f"with EXOGENOUS_CAT, or encode {cats} as numbers yourself.")
        listed = self.hist_exog_list + self.futr_exog_list + self.stat_exog_list
        unlisted = [c for c in cats if c not in listed]
        if unlisted:
            raise ValueError(f"categorical column(s) {unlisted} must also be listed in "
                             f"hist_exog_list, futr_exog_list or stat_exog_list.")
        missing = [c for c in cats if c not in self.categorical_cardinalities]
        if missing:
            raise ValueError(f"categorical_cardinalities has no entry for {missing}; give the "
                             f"number of categories of each, e.g. {{{missing[0]!r}: 12}}.")
        cards = {c: _positive_int(f"categorical_cardinalities[{c!r}]",
                                  self.categorical_cardinalities[c]) for c in cats}
        dims = {c: categorical_embedding_size(self.cat_emb_dim, cards[c]) for c in cats}
        streams = {}
        for stream in ("hist", "futr", "stat"):
            columns = getattr(self, f"{stream}_exog_list")
            if set(cats) & set(columns):
                streams[stream] = ExogEmbeddings(self.spec, stream, columns, cats, cards, dims)
        return streams

    def embed_exog(self, p: dict[str, Tensor], batch: dict) -> dict:
        """The batch's exogenous streams with their categorical columns embedded."""
        return {f"{stream}_exog": layer(p, batch[f"{stream}_exog"])
                for stream, layer in self.embeddings.items()}

    def forward(self, p: dict[str, Tensor], batch: dict, rng=None) -> Tensor:
        """(parameters, windows batch) -> forecast (B, h, n_outputs); rng only in training."""
        raise NotImplementedError

    def windows(self, stage: str) -> tuple[int, int]:
        """(input steps, horizon) of the windows this model takes in `stage` ("train",
        "valid" or "predict"): (input_size, h) throughout for a direct model; recurrent
        models train on shorter horizons and decode the full one."""
        return self.input_size, self.h

    def min_available(self, stage: str) -> tuple[int, int]:
        """The fewest real (input, horizon) points a training window may hold (a
        multivariate window: its n_series series together, as NeuralForecast counts)."""
        input_size, h = self.windows(stage)
        low_in, low_out = self.training_data_availability_threshold
        series = self.n_series if self.MULTIVARIATE else 1
        return max(1, int(input_size * low_in * series)), max(1, int(h * low_out * series))

    def _check_scheduler(self) -> None:
        from ndwork.training.optimizers import SCHEDULERS, learning_rate, scheduler_name

        scheduler = self.lr_scheduler
        if isinstance(scheduler, dict) and "callable" in scheduler:
            raise ValueError(f"this model was saved with the function lr_scheduler "
                             f"{scheduler['callable']}, which a checkpoint cannot hold; pass "
                             f"lr_scheduler= again, or use a named one ({sorted(SCHEDULERS)}).")
        if scheduler is None or (callable(scheduler) and not isinstance(scheduler, type)):
            return
        scheduler_name(scheduler)
        try:  # the keyword arguments, checked at the first step
            learning_rate(self.learning_rate, 0, self.max_steps, -1, scheduler,
                          self.lr_scheduler_kwargs)
        except TypeError as e:
            raise ValueError(f"lr_scheduler={scheduler!r} with lr_scheduler_kwargs="
                             f"{self.lr_scheduler_kwargs!r}: {e}; pass PyTorch's arguments of "
                             f"that scheduler (e.g. StepLR: step_size, gamma).") from None

    def num_parameters(self) -> int:
        """Trainable parameters plus fixed bases, as torch's `model.parameters()` counts."""
        frozen = sum(loss.num_parameters() for loss in (self.loss, self.valid_loss) if loss)
        return self.spec.size() + sum(c.size for c in self.constants.values()) + frozen

    # --- configuration -----------------------------------------------------------
    @classmethod
    def _architecture_names(cls) -> list[str]:
        """The named options of this class's __init__ and of its architecture bases'."""
        names = []
        for klass in cls.__mro__:
            if klass is BaseModel or not issubclass(klass, BaseModel):
                continue
            for n, prm in inspect.signature(klass.__init__).parameters.items():
                if n != "self" and prm.kind is prm.POSITIONAL_OR_KEYWORD and n not in names:
                    names.append(n)
        return names

    def hyperparameters(self) -> dict:
        """Everything needed to rebuild this model, JSON-serializable."""
        config = {name: getattr(self, name) for name in self._architecture_names()}
        for name in TRAINING_DEFAULTS:
            value = getattr(self, name)
            config[name] = value.config() if isinstance(value, Loss) else value
        scheduler = self.lr_scheduler
        if isinstance(scheduler, type):
            config["lr_scheduler"] = scheduler.__name__
        elif callable(scheduler):  # a function: named, so checkpoints say what it was
            config["lr_scheduler"] = {"callable": getattr(scheduler, "__qualname__",
                                                          repr(scheduler))}
        if self.precision is not None:
            config["precision"] = self.precision
        return config

    def precision_scope(self):
        """The Optimizations this model trains and forecasts under: its `precision`, if
        it was given one, over the active configuration."""
        from ndwork.config import optimizations

        return optimizations(precision=self.precision) if self.precision else \
            contextlib.nullcontext()

    def __repr__(self) -> str:
        return self.alias or type(self).__name__
