"""NeuralForecast checkpoints as ndwork models: from_neuralforecast(path).

NeuralForecast 3.3 saves its models as safetensors with their hyper-parameters; this
reads them with NeuralForecast itself (so it needs neuralforecast and torch: the peers
environment, `make peers`), builds the ndwork model of the same name and configuration,
and copies the weights in PyTorch's registration order into ndwork's layout (Linear and
recurrent weights transposed, Conv1d weights as (K, C_in, C_out)). The stored data,
local scalers and categorical codes come along, so `predict()` works at once.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings

import numpy as np

from ndwork.core import NeuralForecast
from ndwork.data import Panel
from ndwork.data.local_scalers import LocalScaling
from ndwork.losses import LOSSES, Loss
from ndwork.models import MODELS, BaseModel
from ndwork.models.base import TRAINING_DEFAULTS
from ndwork.training.trainer import initial_state

# NeuralForecast options that are PyTorch or Lightning objects, not configuration
_RUNTIME = {"loss", "valid_loss", "optimizer", "lr_scheduler", "dataloader_kwargs",
            "optimizer_kwargs", "lr_scheduler_kwargs", "logger", "callbacks"}


def from_neuralforecast(path: str | os.PathLike) -> NeuralForecast:
    """The NeuralForecast checkpoint at `path` (written by NeuralForecast.save) as an
    ndwork NeuralForecast with the same models, weights, data and settings."""
    try:
        from neuralforecast import NeuralForecast as Peer
    except ImportError:
        raise ValueError("from_neuralforecast reads the checkpoint with NeuralForecast itself: "
                         "install it (pip install 'ndwork[peers]', or `make peers`).") from None
    peer = Peer.load(str(path))
    ours = NeuralForecast([to_ndwork_model(m) for m in peer.models], peer.freq,
                          peer.local_scaler_type, peer.local_static_scaler_type)
    for i, (model, theirs) in enumerate(zip(ours.models, peer.models, strict=True)):
        state = initial_state(model)
        named = [(n, _real_array(p)) for n, p in theirs.named_parameters()
                 if p.requires_grad and not n.startswith("loss.")]  # frozen ones: constants here
        state.params = torch_to_ndwork(named, model.spec.shapes).astype(state.params.dtype)
        # BatchNorm's running statistics, in registration order on both sides
        stats = [b.detach().cpu().numpy() for n, b in theirs.named_buffers()
                 if n.endswith(("running_mean", "running_var"))]
        if len(stats) != len(state.buffers):
            raise ValueError(f"{type(model).__name__}: {len(stats)} NeuralForecast running "
                             f"statistics against {len(state.buffers)} in ndwork")
        state.buffers = {k: v.astype(state.buffers[k].dtype)
                         for k, v in zip(state.buffers, stats, strict=True)}
        state.done = True
        ours.states[i] = state
    ours.id_col, ours.time_col, ours.target_col = peer.id_col, peer.time_col, peer.target_col
    vocabulary = getattr(peer, "categorical_vocab_", None) or {}
    ours.categorical_vocabulary = {col: sorted(codes, key=codes.get)
                                   for col, codes in vocabulary.items()} or None
    if getattr(peer, "dataset", None) is not None:
        ours.panel = _panel(peer, ours)
    return ours


def _real_array(parameter) -> np.ndarray:
    """A torch parameter as float64 numpy; a complex one as (..., 2) (real, imaginary),
    the layout of ndwork's complex parameters."""
    import torch

    value = parameter.detach().cpu()
    return (torch.view_as_real(value) if value.is_complex() else value).double().numpy().copy()


def to_ndwork_model(peer) -> BaseModel:
    """The ndwork model of a NeuralForecast model's class and hyper-parameters (untrained)."""
    name = type(peer).__name__
    if name not in MODELS:
        raise ValueError(f"NeuralForecast's {name} has no ndwork counterpart yet; the README's "
                         f"model table lists those that do.")
    cls = MODELS[name]
    accepted = set(cls._architecture_names()) | set(TRAINING_DEFAULTS)
    options, ignored = {}, []
    for key, value in dict(peer.hparams).items():
        if key in accepted and key not in _RUNTIME:
            options[key] = _plain(value)  # n_series too, for the multivariate models
        elif key not in _RUNTIME | _LIGHTNING | {"n_series"}:
            ignored.append(key)
    options["loss"] = to_ndwork_loss(peer.loss)
    if peer.valid_loss is not peer.loss:
        options["valid_loss"] = to_ndwork_loss(peer.valid_loss)
    if ignored:
        warnings.warn(f"{name}: NeuralForecast options without an ndwork counterpart, ignored: "
                      f"{sorted(ignored)}", UserWarning, stacklevel=2)
    return cls(**options)


# Lightning trainer options NeuralForecast keeps among a model's hyper-parameters
_LIGHTNING = {"accelerator", "devices", "strategy", "enable_checkpointing", "precision",
              "enable_model_summary", "enable_progress_bar", "n_samples",
              "h_train", "inference_input_size", "max_epochs", "num_sanity_val_steps"}


def to_ndwork_loss(loss) -> Loss:
    """The ndwork loss of a NeuralForecast loss object, with its settings."""
    name = type(loss).__name__
    if name not in LOSSES:
        raise ValueError(f"NeuralForecast's loss {name} has no ndwork counterpart.")
    cls = LOSSES[name]
    wanted = inspect.signature(cls.__init__).parameters
    options = {}
    levels = _levels(getattr(loss, "output_names", []))
    for key in wanted:
        if key not in ("self", "level", "quantiles", "distribution_kwargs") and hasattr(loss, key):
            options[key] = _plain(getattr(loss, key))
    options.update({k: _plain(v) for k, v in (getattr(loss, "distribution_kwargs", None) or {})
                    .items() if k in wanted})
    if "level" in wanted and levels is not None:
        options["level"] = levels
    elif "quantiles" in wanted and getattr(loss, "quantiles", None) is not None:
        options["quantiles"] = _plain(loss.quantiles)
    return cls(**{k: v for k, v in options.items() if v is not None or k == "horizon_weight"})


def _levels(names: list) -> list | None:
    """NeuralForecast's interval levels from its output names (-lo-80, -hi-80, ...)."""
    found = [re.fullmatch(r"-(lo|hi)-([\d.]+)", str(n)) for n in names]
    levels = sorted({float(m.group(2)) for m in found if m})
    if not levels:
        return None
    return [int(v) if v.is_integer() else v for v in levels]


def _plain(value):
    """A hyper-parameter as plain Python (tensors and arrays as lists)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _panel(peer, ours: NeuralForecast) -> Panel:
    """NeuralForecast's stored (already locally scaled) data as an ndwork panel."""
    data = peer.dataset
    temporal = data.temporal.detach().cpu().numpy()
    cols = list(data.temporal_cols)
    dtype = np.float32
    wanted = ours._temporal_cols
    static_cols = ours._static_cols
    static = np.zeros((len(peer.uids), 0), dtype)
    if static_cols:
        theirs = list(data.static_cols)
        static = data.static.detach().cpu().numpy()[:, [theirs.index(c) for c in static_cols]]
    panel = Panel(uids=np.asarray(peer.uids), indptr=np.asarray(data.indptr, np.int64),
                  y=temporal[:, cols.index(peer.target_col)].astype(dtype),
                  ds=np.asarray(peer.ds), temporal=temporal[:, [cols.index(c) for c in wanted]]
                  .astype(dtype).reshape(len(temporal), len(wanted)),
                  temporal_cols=wanted, static=static.astype(dtype), static_cols=static_cols)
    if "available_mask" in cols:
        mask = temporal[:, cols.index("available_mask")].astype(dtype)
        if not mask.all():
            panel.available = mask
    scalers = getattr(peer, "scalers_", None) or {}
    static_scalers = getattr(peer, "static_scalers_", None) or {}
    if scalers or static_scalers:
        stats = {("y" if col == peer.target_col else col): s.stats_ for col, s in scalers.items()}
        panel.scaling = LocalScaling(peer.local_scaler_type, peer.local_static_scaler_type, stats,
                                     {col: s.stats_ for col, s in static_scalers.items()})
    return panel


def _to_ndwork_layout(name: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    if value.ndim == 3 and value.shape[1] == 1 and name.endswith("conv1d.conv.weight"):
        return value[:, 0, :].T  # xLSTM's per-channel convolution (C, 1, K) -> (K, C)
    if value.ndim == 3 and ("xlstm." in name or "_recurrent_kernel_" in name):
        return value.transpose(0, 2, 1)  # head-wise weights (heads, out, in) -> (heads, in, out)
    if value.ndim == 4 and ".kernels." in name:  # TimesNet's Conv2d (out, in, kh, kw)
        return value.transpose(2, 3, 1, 0)  # -> (kh, kw, in, out)
    if value.ndim > 3 or "weight" not in name.rsplit(".", 1)[-1] or "embeddings." in name:
        return value.reshape(shape)  # raw parameters (positional tables, embeddings, ...)
    module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    if "norm" in module:  # normalizations' weights (TSMixerx's LayerNorm over (h, C),
        return value.reshape(shape)  # RevIN's (1, 1, N)): the same layout
    value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
    if value.shape != tuple(shape) and value.size == np.prod(shape):
        value = value.reshape(shape)  # a kernel of width 1, or one input channel, dropped here
    return value


def torch_to_ndwork(torch_params: list[tuple[str, np.ndarray]], shapes: dict) -> np.ndarray:
    """Flatten PyTorch's parameters (name, array) into ndwork's flat layout of `shapes`:
    by name when the names agree (after NeuralForecast's "model." prefix), else in
    registration order."""
    by_name = {n.removeprefix("model."): v for n, v in torch_params}
    if set(by_name) == set(shapes):
        torch_params = [(n, by_name[n]) for n in shapes]
    targets = list(shapes.items())
    flat, pending = [], None
    for name, value in torch_params:
        target = targets[len(flat)] if len(flat) < len(targets) else (name, value.shape)
        if target[0].endswith("conv2.state.weight") and pending is None:
            pending = value[:, :, 0]  # BiTCN's 1x1 conv to 2C: waits for its bias
            continue
        if pending is not None:  # its bias: emit (state weight, bias, skip weight, bias)
            half = pending.shape[0] // 2
            flat += [pending[:half].T, value[:half], pending[half:].T, value[half:]]
            pending = None
            continue
        flat.append(_to_ndwork_layout(name, value, target[1]))
    if len(flat) != len(shapes):
        raise ValueError(f"{len(flat)} NeuralForecast arrays against {len(shapes)} in ndwork")
    for value, (our_name, shape) in zip(flat, shapes.items(), strict=True):
        if value.shape != tuple(shape):
            raise ValueError(f"{our_name}: NeuralForecast's {value.shape} against ndwork's {shape}")
    return np.concatenate([np.ascontiguousarray(v).reshape(-1) for v in flat])
