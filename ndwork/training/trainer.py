"""The training step as a pure function, the training loop, and batched inference."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from ndwork.autodiff import memo
from ndwork.autodiff.noise import TrainingNoise
from ndwork.autodiff.tensor import Parameters, Tensor, backward
from ndwork.config import active, keep_freed_memory_for_reuse, kernel_blas_single_threaded
from ndwork.data import Panel, WindowSampler, gather_windows, scale_windows
from ndwork.kernels.gemm import forecast_products, quiet_numpy_blas
from ndwork.kernels.precision import BF16, to_low, widen
from ndwork.models.base import BaseModel
from ndwork.training.loss_scaling import LossScaler
from ndwork.training.optimizers import Optimizer, learning_rate


class TrainingDiverged(RuntimeError):
    """The loss or its gradient stopped being finite; `state` holds the last good state."""

    def __init__(self, message: str, state: TrainState):
        super().__init__(message)
        self.state = state

    def __reduce__(self):  # crosses process boundaries (dask) as itself, state included
        return type(self), (self.args[0], self.state)


def layout(model: BaseModel) -> Parameters:
    """The flat-vector layout of the model's parameters (cached on the model)."""
    if getattr(model, "_layout", None) is None:
        model._layout = Parameters(model.spec.shapes, active().dtypes.param)
    return model._layout


def build_batch(model: BaseModel, y: np.ndarray, temporal: np.ndarray,
                temporal_cols: list[str], static: np.ndarray, static_cols: list[str],
                input_size: int, available: np.ndarray | None = None,
                weight: np.ndarray | None = None):
    """Scale windows y (W, L + h), temporal (W, L + h, C), L = input_size, and split them
    into the model's inputs; `available` (W, L + h) masks the points outside a series
    (padding) out of the scaler statistics and the loss; `weight` (W, L + h), the points'
    sample_weight, weighs each window's loss by its mean over the horizon (NeuralForecast's).
    Returns (batch, shift, scale)."""
    L = input_size
    if available is None:
        available = np.ones(y.shape, y.dtype)
    y_s, temporal_s, shift, scale = scale_windows(y, temporal, L, model.scaler_type,
                                                  available[:, :L])
    insample = np.ascontiguousarray(y_s[:, :L])
    batch = {
        "insample_y": insample * 0 if model.exclude_insample_y else insample,
        "insample_mask": np.ascontiguousarray(available[:, :L]),
        "outsample_y": np.ascontiguousarray(y_s[:, L:]),
        "outsample_y_data": np.ascontiguousarray(y[:, L:]),  # distributions' likelihood
        "y_shift": shift, "y_scale": scale,
        "outsample_mask": np.ascontiguousarray(
            available[:, L:] if weight is None
            else available[:, L:] * weight[:, L:].mean(axis=1, keepdims=True)),
        "hist_exog": None, "futr_exog": None, "stat_exog": None,
    }
    if model.cat_exog_list:  # categorical codes bypass the scaler, as in NeuralForecast
        cat = [temporal_cols.index(c) for c in model.cat_exog_list if c in temporal_cols]
        temporal_s = temporal_s.copy()
        temporal_s[:, :, cat] = temporal[:, :, cat]
    if model.hist_exog_list:
        idx = [temporal_cols.index(c) for c in model.hist_exog_list]
        batch["hist_exog"] = np.ascontiguousarray(temporal_s[:, :L][:, :, idx])
    if model.futr_exog_list:
        idx = [temporal_cols.index(c) for c in model.futr_exog_list]
        batch["futr_exog"] = np.ascontiguousarray(temporal_s[:, :, idx])
    if model.stat_exog_list:
        idx = [static_cols.index(c) for c in model.stat_exog_list]
        batch["stat_exog"] = np.ascontiguousarray(static[:, idx])
    return batch, shift, scale


def forward(model: BaseModel, params: np.ndarray, batch: dict, rng: TrainingNoise | None = None,
            buffers: dict | None = None, inference: bool = False) -> tuple[Tensor, dict]:
    """The model's forward; `rng` given means training (dropout, batch statistics);
    `inference` builds no gradient for the parameters."""
    p = dict(layout(model).constants(params)) if inference else layout(model).tensors(params)
    p.update(buffers if buffers is not None else model.spec.initial_buffers())
    with memo.forecasting(params):  # (training's weights are never registered: no memo)
        inputs = {**batch, "insample_y": Tensor(batch["insample_y"]),
                  **model.embed_exog(p, batch)}
        return model.loss.domain_map(p, model.forward(p, inputs, rng), batch, rng), p


def loss_and_grad(model: BaseModel, params: np.ndarray, batch: dict,
                  rng: TrainingNoise | None = None, buffers: dict | None = None,
                  loss_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """One training step's loss and its gradient with respect to the flat parameters.

    Pure in params and batch (rng only drives dropout); a model with running
    statistics (BatchNorm) updates `buffers` in place when rng is given. The backward
    runs on the loss times `loss_scale` (fp16's loss scaling); the gradient returned is
    divided by it again."""
    keep_freed_memory_for_reuse()  # once per process: wherever steps run (dask workers too)
    out, p = forward(model, params, batch, rng, buffers)
    loss = model.loss(out, batch)
    backward(loss, loss_scale)
    grads = layout(model).gather_grads({k: p[k] for k in model.spec.shapes})
    if loss_scale != 1.0:
        grads *= 1.0 / loss_scale
    return float(loss.data), grads


def model_outputs(model: BaseModel, params: np.ndarray, batch: dict, buffers: dict | None = None,
                  windows_per_series: int = 1) -> np.ndarray:
    """The model's raw outputs (W, h, n_outputs) in inference mode.

    One forward takes at most `inference_windows_batch_size` windows and at most
    `valid_batch_size` series (the batch holds each series' `windows_per_series`
    windows one after another)."""
    n = batch["insample_y"].shape[0]
    limits = [model.inference_windows_batch_size or 0]
    if model.valid_batch_size and not model.MULTIVARIATE:
        limits.append(model.valid_batch_size * windows_per_series)
    chunk = min((limit for limit in limits if limit > 0), default=n)
    if model.MULTIVARIATE:  # a window is n_series consecutive rows: never split one
        chunk *= model.n_series
    outs = []
    with kernel_blas_single_threaded(), quiet_numpy_blas(), forecast_products():
        for a in range(0, n, chunk):
            part = {k: (v[a:a + chunk] if isinstance(v, np.ndarray) else v)
                    for k, v in batch.items()}
            outs.append(forward(model, params, part, None, buffers, inference=True)[0].data)
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def predict_windows(model: BaseModel, params: np.ndarray, batch: dict, shift: np.ndarray,
                    scale: np.ndarray, buffers: dict | None = None, windows_per_series: int = 1,
                    quantiles: list[float] | None = None) -> np.ndarray:
    """Forecasts (W, h, columns) in the data's scale: the loss's output columns, or for a
    distribution the mean and `quantiles` when given. Sampling draws from a generator
    seeded by the model's random_seed, so a forecast repeats."""
    loss = model.loss
    if model.scaler_type == "revin":  # NeuralForecast's RevIN: learnt shift and scale
        views = layout(model).views(params)
        shift = shift + widen(views["scaler.revin_bias"])[0]
        scale = scale * (np.maximum(widen(views["scaler.revin_weight"])[0], 0) + 1e-6)

    def point_outputs(inputs):  # a point or quantile loss's outputs in the scaled units
        raw = model_outputs(model, params, inputs, buffers, windows_per_series)
        return np.sinh(raw) if model.scaler_type == "invariant" else raw  # its arcsinh undone

    if loss.quantile_input:  # IQLoss: each quantile asked for, sorted
        outs = [loss.forecast(point_outputs({**batch, "quantile": q}), shift, scale)
                for q in (quantiles or [0.5])]
        out = np.sort(np.concatenate(outs, axis=-1), axis=-1)
    elif not loss.is_distribution_output:
        out = loss.forecast(point_outputs(batch), shift, scale)
    elif model.TRAJECTORIES:  # autoregressive sample paths
        paths = trajectories(model, params, batch, np.random.default_rng(model.random_seed))
        raw = model_outputs(model, params, batch, buffers) if loss.return_params else None
        out = loss.summarize(reconciled(model, paths), quantiles, raw, shift, scale)
    else:
        raw = model_outputs(model, params, batch, buffers, windows_per_series)
        draws, args = loss.sample(raw, shift, scale, loss.num_samples,
                                  np.random.default_rng(model.random_seed))
        out = loss.summarize(reconciled(model, draws), quantiles, args=args)
    return out.astype(active().dtypes.output, copy=False)


def reconciled(model, draws: np.ndarray) -> np.ndarray:
    """Sample draws (W, h, n), reconciled across the hierarchy when the model is HINT."""
    return model.reconcile(draws) if hasattr(model, "reconcile") else draws


def trajectories(model: BaseModel, params: np.ndarray, batch: dict,
                 rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """The model's sample paths (W, h, n) in the data's scale (n: its
    trajectory_samples), at most inference_windows_batch_size windows at a time."""
    n = n or model.trajectory_samples
    p = layout(model).tensors(params)
    w = batch["insample_y"].shape[0]
    chunk = model.inference_windows_batch_size if model.inference_windows_batch_size > 0 else w
    parts = []
    with kernel_blas_single_threaded(), quiet_numpy_blas():
        for a in range(0, w, chunk):
            part = {k: (v[a:a + chunk] if isinstance(v, np.ndarray) else v)
                    for k, v in batch.items()}
            part.update(insample_y=Tensor(part["insample_y"]), **model.embed_exog(p, part))
            parts.append(model.sample_paths(p, part, n, rng))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


@dataclasses.dataclass
class TrainState:
    """Everything training needs to continue exactly where it stopped."""

    params: np.ndarray
    optimizer: Optimizer
    rng: np.random.Generator
    sampler_order: np.ndarray
    buffers: dict = dataclasses.field(default_factory=dict)  # running statistics
    train_losses: list = dataclasses.field(default_factory=list)
    valid_losses: list = dataclasses.field(default_factory=list)
    fit_start: int = 0  # optimizer step where this fit began: the schedule counts from it
    best_valid: float = np.inf  # early stopping: best watched loss (val_monitor) so far ...
    bad_checks: int = 0  # ... and checks since it last improved
    done: bool = False  # this fit finished (max_steps, early stop, or a callback's stop)
    diverged: str = ""  # why the last fit stopped early with the last finite state, if it did
    precision: str = "fp32"  # the Optimizations.precision it last trained under
    loss_scaler: LossScaler | None = None  # fp16's dynamic loss scaling
    # the weights forecasts read (inference_weights), with the params and step they are of
    inference_copy: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    def restart(self) -> None:
        """Begin a new fit from the current weights and optimizer state (warm start)."""
        self.fit_start, self.best_valid, self.bad_checks, self.done, self.diverged = (
            self.optimizer.step, np.inf, 0, False, "")


def inference_weights(state: TrainState) -> np.ndarray:
    """The weights a forecast reads: a view of the float32 master weights, or under bf16
    their bfloat16 copy (a forecast then streams half the bytes; the dense layers read it
    as it is), made once per optimizer step (every change to the weights is one), so
    that forecasts may keep what they derive from it (`ndwork.autodiff.memo`).
    fp16 forecasts read the float32 weights (its activations are float16)."""
    policy = active().dtypes
    low = policy.store_low and policy.low == BF16
    step = None if state.optimizer is None else state.optimizer.step
    cached = state.inference_copy
    if cached is None or cached[0] is not state.params or cached[1] != (step, low):
        weights = to_low(state.params, BF16) if low else state.params.view()
        memo.register(weights)
        cached = state.inference_copy = (state.params, (step, low), weights)
    return cached[2]


def initial_state(model: BaseModel) -> TrainState:
    rng = np.random.default_rng(model.random_seed)
    params = model.spec.initialize(rng, active().dtypes.param)
    return TrainState(params, Optimizer(model.optimizer, params.size, model.optimizer_kwargs),
                      rng, np.zeros(0, np.int64), model.spec.initial_buffers())


def validation_loss(model: BaseModel, state: TrainState, panel: Panel, val_size: int,
                    test_size: int) -> float:
    """valid_loss over the windows whose horizon lies in each series' validation part."""
    input_size, h = model.windows("valid")
    window = input_size + h
    if val_size < h:
        raise ValueError(f"val_size={val_size} is shorter than h={h}; use val_size >= h.")
    ends = panel.indptr[1:] - test_size
    offsets = np.arange(window, window + val_size - h + 1, model.step_size)
    starts = ends[:, None] - val_size - input_size + offsets[None, :] - window
    series = np.broadcast_to(np.arange(panel.n_series)[:, None], starts.shape)
    if model.MULTIVARIATE:  # window-major
        starts, series = starts.T, series.T
    # a short series' first windows start before it (padded, as NeuralForecast)
    w = gather_windows(panel, starts.reshape(-1), window, series.reshape(-1))
    batch, shift, scale = build_batch(model, w["y"], w["temporal"], panel.temporal_cols,
                                      panel.static[w["series"]], panel.static_cols, input_size,
                                      w["available"], w.get("weight"))
    target, mask = w["y"][:, input_size:], batch["outsample_mask"]
    valid = model.valid_loss or model.loss
    per_series = 1 if model.MULTIVARIATE else len(offsets)
    if valid.is_distribution_output:  # its likelihood, on the raw outputs
        raw = model_outputs(model, inference_weights(state), batch, state.buffers, per_series)
        return float(valid.value_raw(raw, target, mask, shift, scale))
    if model.loss.is_distribution_output and valid.outputsize_multiplier == 1:
        raw = model_outputs(model, inference_weights(state), batch, state.buffers, per_series)
        y_hat = model.loss.mean(raw, shift, scale)[..., None]  # NF: the distribution's mean
    else:
        y_hat = predict_windows(model, inference_weights(state), batch, shift, scale, state.buffers,
                                per_series)
        if model.loss.is_distribution_output:  # a quantile loss on the sampled quantiles
            y_hat = y_hat[..., 1:1 + len(model.loss.quantiles)]
    if valid.outputsize_multiplier != y_hat.shape[-1]:
        y_hat = model.loss.to_point(y_hat)[..., None]
    return float(valid.value(y_hat, target, mask, w["y"][:, :input_size]))


def check_series(model: BaseModel, panel: Panel) -> None:
    """A multivariate model needs the n_series series it was built for."""
    if panel.n_series != model.n_series:
        raise ValueError(f"{model!r} was built for n_series={model.n_series}, the data has "
                         f"{panel.n_series} series; pass n_series={panel.n_series}.")


def warn_unaligned_ends(model: BaseModel, panel: Panel) -> None:
    """A multivariate model lines series up on their last points (NeuralForecast's
    padding): series that end on different dates are mixed at different dates."""
    last = panel.ds[panel.indptr[1:] - 1]
    late = np.flatnonzero(last != last[0])
    if len(late):
        late = panel.uids[late[:3]].tolist()
        warnings.warn(f"{model!r} mixes series at each time step and lines them up on their "
                      f"last points (as NeuralForecast does), but the series end on different "
                      f"dates (e.g. {panel.uids[0]!r} and {late}): their windows mix different "
                      f"dates. Trim the series to a common last date to avoid it.",
                      UserWarning, stacklevel=4)


def make_batch(model: BaseModel, panel: Panel, windows: np.ndarray) -> dict:
    """The scaled training batch of WindowSampler's `windows` (start row, series)."""
    input_size, h = model.windows("train")
    w = gather_windows(panel, windows[:, 0], input_size + h, windows[:, 1])
    batch, _, _ = build_batch(model, w["y"], w["temporal"], panel.temporal_cols,
                              panel.static[w["series"]], panel.static_cols, input_size,
                              w["available"], w.get("weight"))
    return batch


def diverged(model: BaseModel, state: TrainState, step: int, loss: float,
             why: str = "") -> TrainingDiverged:
    what = why or f"the training loss became {loss}"
    advice = ("Lower learning_rate, use scaler_type='robust' or 'standard', or check the "
              "data.")
    if active().precision == "fp16":
        advice = ("Under precision='fp16' values beyond 65,504 overflow: scale the data "
                  "(scaler_type='standard' or 'robust'), or use precision='bf16' (float32's "
                  "range) or 'fp32'. " + advice)
    return TrainingDiverged(
        f"{model!r}: {what} at step {step + 1}; training stopped and the model keeps the "
        f"parameters of step {step}. {advice}", state)


def loss_scale(state: TrainState) -> float:
    return 1.0 if state.loss_scaler is None else state.loss_scaler.scale


def apply_step(model: BaseModel, state: TrainState, loss: float, grads: np.ndarray,
               buffers: dict, lr: float) -> None:
    """Apply one step's gradient to the state; under fp16 loss scaling, skip a step whose
    gradient overflowed (the optimizer's step still advances). Raises TrainingDiverged
    when the loss, the running statistics or an unscaled gradient is not finite."""
    if not (np.isfinite(loss) and finite(buffers)):
        raise diverged(model, state, state.optimizer.step, loss)
    finite_grads = bool(np.isfinite(grads).all())
    if state.loss_scaler is None:
        if not finite_grads:
            raise diverged(model, state, state.optimizer.step, loss,
                           "the gradient stopped being finite")
    else:
        try:
            applied = state.loss_scaler.update(finite_grads)
        except FloatingPointError as error:
            raise diverged(model, state, state.optimizer.step, loss, str(error)) from None
        if not applied:
            state.optimizer.skip()
            return
    state.buffers = buffers
    state.optimizer.update(state.params, clipped(model, grads), lr)


def clipped(model: BaseModel, grads: np.ndarray) -> np.ndarray:
    """The gradient after Lightning's gradient_clip_val: scaled to an L2 norm of at most
    the value (torch's clip_grad_norm_, its 1e-6 included), or clamped entrywise."""
    limit = model.gradient_clip_val
    if not limit:
        return grads
    if model.gradient_clip_algorithm == "value":
        return np.clip(grads, -limit, limit)
    factor = limit / (float(np.linalg.norm(grads)) + 1e-6)
    return grads * grads.dtype.type(factor) if factor < 1 else grads


def finite(buffers: dict) -> bool:
    """Running statistics can overflow while the loss is still finite."""
    return all(np.isfinite(v).all() for v in buffers.values())


def batch_positions(model: BaseModel, starts: np.ndarray) -> np.ndarray:
    """Each window's position in a step's global batch (a multivariate window is
    n_series rows of starts)."""
    return np.arange(len(starts) // (model.n_series if model.MULTIVARIATE else 1))


class LocalSteps:
    """The single-process backend: one optimizer step per batch, in this process."""

    def run(self, model, panel, state: TrainState, batches, lrs,
            positions: list[np.ndarray] | None = None) -> list[float]:
        """positions[i]: batch i's windows' positions in the global batch (a rank's share)."""
        losses = []
        for i, (starts, lr) in enumerate(zip(batches, lrs, strict=True)):
            batch = make_batch(model, panel, starts)
            windows = batch_positions(model, starts) if positions is None else positions[i]
            noise = TrainingNoise(model.random_seed, state.optimizer.step, windows)
            buffers = {k: v.copy() for k, v in state.buffers.items()}  # kept if the step is
            with np.errstate(over="ignore", invalid="ignore"):  # finite, checked below
                loss, grads = loss_and_grad(model, state.params, batch, noise, buffers,
                                            loss_scale(state))
            apply_step(model, state, loss, grads, buffers, lr)
            losses.append(loss)
        return losses

    def finish(self, state: TrainState) -> None:
        """Nothing to bring back: every step ran here."""


def train(model: BaseModel, panel: Panel, val_size: int = 0, test_size: int = 0,
          state: TrainState | None = None, verbose: bool = True,
          callback: Callable[[int, float, float | None], bool | None] | None = None,
          backend=None, sync_every: int = 1, progress_note: str = "") -> TrainState:
    """Train `state` (fresh weights when None) up to model.max_steps steps of this fit.

    Steps run in rounds of `sync_every` through `backend` (this process by default; the
    dask backend spreads each round over workers); a round also ends at each
    validation check, so a check measures the parameters of the step it is labelled
    with. `callback(step, train_loss, valid_loss)` runs after every step; returning
    True stops training at that round's end. Raises TrainingDiverged when the loss or
    gradient is not finite; the state then holds the last finite parameters.
    """
    state = state or initial_state(model)
    state.precision = active().precision
    if state.precision != "fp16":
        state.loss_scaler = None
    elif state.loss_scaler is None:
        state.loss_scaler = LossScaler()
    backend = backend or LocalSteps()
    if model.MULTIVARIATE:
        check_series(model, panel)
        warn_unaligned_ends(model, panel)
    if hasattr(model, "reconcile"):  # HINT: S's rows are the data's series
        model.check_series(panel.n_series)
    train_lengths = panel.lengths - val_size - test_size
    held_out = np.flatnonzero(train_lengths < 1)
    if len(held_out):
        ids = panel.uids[held_out[:5]].tolist()
        raise ValueError(
            f"series {ids} ({len(held_out)} in all) have no point left to train on: "
            f"{val_size + test_size} of their last points are held out (val_size={val_size}, "
            f"test part {test_size}: cross-validation's h + (n_windows - 1) * step_size) and "
            f"the shortest has {panel.lengths[held_out].min()}; drop them, or use a smaller "
            f"val_size, n_windows or step_size.")
    train_panel = panel.head(train_lengths) if val_size or test_size else panel
    sampler = WindowSampler(train_panel, train_lengths, *model.windows("train"), model.step_size,
                            model.batch_size, model.windows_batch_size, model.MULTIVARIATE,
                            model.drop_last_loader, model.start_padding_enabled,
                            model.min_available("train"), model.shuffle_series)
    sampler.set_state(state.sampler_order)
    end = state.fit_start + model.max_steps
    step = state.optimizer.step
    checks = model.val_check_steps if val_size > 0 else end  # rounds end at validation checks
    show = verbose and model.enable_progress_bar and not state.done
    bar = tqdm(total=model.max_steps, initial=step - state.fit_start, disable=not show,
               desc=f"{model!r}{progress_note}", leave=False)
    try:
        while step < end and not state.done:
            since_check = (step - state.fit_start) % checks
            k = min(sync_every, end - step, checks - since_check)
            batches = [sampler.sample(state.rng) for _ in range(k)]
            lrs = [learning_rate(model.learning_rate, s - state.fit_start, model.max_steps,
                                 model.num_lr_decays, model.lr_scheduler,
                                 model.lr_scheduler_kwargs) for s in range(step, step + k)]
            losses = backend.run(model, train_panel, state, batches, lrs)
            state.sampler_order = sampler.state()
            stop = False
            for loss in losses:
                step += 1
                state.train_losses.append((step, loss))
                valid = None
                if val_size > 0 and (step - state.fit_start) % model.val_check_steps == 0:
                    valid = validation_loss(model, state, panel, val_size, test_size)
                    state.valid_losses.append((step, valid))
                    watched = loss if model.val_monitor == "train_loss" else valid
                    if watched < state.best_valid:
                        state.best_valid, state.bad_checks = watched, 0
                    else:
                        state.bad_checks += 1
                bar.update(1)
                if (step - state.fit_start) % 10 == 1:
                    skipped = {} if state.loss_scaler is None else {
                        "skipped": state.loss_scaler.skipped}  # fp16 overflow steps
                    bar.set_postfix(loss=f"{loss:.4g}", **skipped, refresh=False)
                if callback is not None and callback(step, loss, valid):
                    stop = True
                patience = model.early_stop_patience_steps
                stop = stop or (patience > 0 and state.bad_checks >= patience)
            state.done = stop or step >= end
    finally:
        bar.close()
        backend.finish(state)
    return state
