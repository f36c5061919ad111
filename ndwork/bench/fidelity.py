"""Fidelity suite (peers environment): NeuralForecast's freshly initialized weights loaded
into the same ndwork model, and both forwards on the same windows.

Beyond equal parameter counts, this checks that the architectures compute the same
function: every model's forecasts must agree within 1e-4 of the largest forecast, in
float64 on both sides (NeuralForecast's N(0, 1) initialization of ResLSTM amplifies
float32 round-off past any tolerance; float64 shows the functions are the same). With
recurrent=True, the training forward (teacher-forced over input_size + 1 values and 4
targets) against NeuralForecast's forward over the same sequence.
Weights map one to one in registration order (PyTorch's Linear and recurrent weights
are stored transposed here, Conv1d weights as (K, C_in, C_out)); BiTCN's 1x1
convolution to 2C channels is split into its two C -> C halves.

    python -m ndwork.bench fidelity     # in the peers environment (make peers builds it)
"""

from __future__ import annotations

import contextlib

import numpy as np

import ndwork
from ndwork.bench.common import table

MODELS = [("RNN", {}), ("LSTM", {}), ("GRU", {}), ("TCN", {}), ("BiTCN", {}), ("DilatedRNN", {}),
          ("DilatedRNN", {"cell_type": "RNN"}), ("DilatedRNN", {"cell_type": "GRU"}),
          ("DilatedRNN", {"cell_type": "ResLSTM"}), ("DilatedRNN", {"cell_type": "AttentiveLSTM"}),
          ("xLSTM", {}), ("xLSTM", {"backbone": "sLSTM"}),
          ("RNN", {"recurrent": True}), ("LSTM", {"recurrent": True}),
          ("GRU", {"recurrent": True}), ("LSTM", {"recurrent": True, "encoder_n_layers": 3})]
TEACHER_FORCED = 4  # targets of the recurrent=True comparison
H, INPUT, WINDOWS = 12, 24, 8
# the xlstm package starts the gates' input weights and sLSTM's recurrent weights at zero,
# which would leave them out of the comparison: every weight gets N(0, 0.05^2) noise first
ZERO_INITIALIZED = ("xLSTM",)
TOLERANCE = 1e-4  # max |ndwork - NeuralForecast| / max |NeuralForecast|


def _to_ndwork_layout(name: str, value: np.ndarray) -> np.ndarray:
    if value.ndim == 3 and value.shape[1] == 1 and name.endswith("conv1d.conv.weight"):
        return value[:, 0, :].T  # xLSTM's per-channel convolution (C, 1, K) -> (K, C)
    if value.ndim == 3 and ("xlstm." in name or "_recurrent_kernel_" in name):
        return value.transpose(0, 2, 1)  # head-wise weights (heads, out, in) -> (heads, in, out)
    return value.transpose(2, 1, 0) if value.ndim == 3 else value.T


def torch_to_ndwork(torch_params: list[tuple[str, np.ndarray]], shapes: dict) -> np.ndarray:
    """Flatten PyTorch's parameters into ndwork's layout, in order."""
    flat, pending = [], None
    for name, value in torch_params:
        if name.endswith("conv2.weight") and value.ndim == 3 and value.shape[2] == 1:
            pending = value[:, :, 0]  # BiTCN's 1x1 conv to 2C: waits for its bias
            continue
        if pending is not None:  # its bias: emit (state weight, bias, skip weight, bias)
            half = pending.shape[0] // 2
            flat += [pending[:half].T, value[:half], pending[half:].T, value[half:]]
            pending = None
            continue
        flat.append(_to_ndwork_layout(name, value))
    if len(flat) != len(shapes):
        raise ValueError(f"{len(flat)} NeuralForecast arrays against {len(shapes)} in ndwork")
    for value, (our_name, shape) in zip(flat, shapes.items(), strict=True):
        if value.shape != tuple(shape):
            raise ValueError(f"{our_name}: NeuralForecast's {value.shape} against ndwork's {shape}")
    return np.concatenate([np.ascontiguousarray(v).reshape(-1) for v in flat])


@contextlib.contextmanager
def vanilla_slstm():
    """NeuralForecast's xLSTM(backbone="sLSTM") asks the xlstm package for its CUDA kernel,
    which a CPU cannot build; inside this block the package builds its own pure-PyTorch
    ("vanilla") sLSTM cell instead, the same function."""
    try:
        from xlstm.blocks.slstm import cell
    except ImportError:  # no xlstm package: NeuralForecast's xLSTM fails with its own message
        yield
        return
    original = cell.sLSTMCell.__new__
    cell.sLSTMCell.__new__ = lambda cls, config, skip_backend_init=False: (
        cell.sLSTMCell_vanilla(config))
    try:
        yield
    finally:
        cell.sLSTMCell.__new__ = original


def compare(name: str, options: dict, seed: int = 0) -> dict:
    import neuralforecast.models
    import torch

    from ndwork.autodiff.noise import TrainingNoise
    from ndwork.bench.peers import NF_TRAINER
    from ndwork.models import MODELS as NDWORK
    from ndwork.training.trainer import forward

    torch.manual_seed(seed)
    with vanilla_slstm():
        peer = getattr(neuralforecast.models, name)(h=H, input_size=INPUT, **options, **NF_TRAINER)
    peer = peer.double().eval()
    if name in ZERO_INITIALIZED:
        with torch.no_grad():
            for weight in peer.parameters():
                weight.add_(0.05 * torch.randn_like(weight))
    with ndwork.optimizations(precision="fp64"):
        model = NDWORK[name](h=H, input_size=INPUT, **options)
    params = torch_to_ndwork([(n, p.detach().numpy().copy()) for n, p in
                              peer.named_parameters()], model.spec.shapes)
    rng = np.random.default_rng(seed)
    label = " ".join([name] + [f"{k}={v}" for k, v in options.items()])
    recurrent = options.get("recurrent", False)
    # recurrent=True: the training forward, teacher-forced over input_size + 1 values and
    # TEACHER_FORCED targets, against NeuralForecast's forward over the same sequence
    y = rng.normal(size=(WINDOWS, INPUT + (TEACHER_FORCED if recurrent else 0)))
    batch = {"insample_y": y, "futr_exog": None, "hist_exog": None, "stat_exog": None}
    training = None
    if recurrent:
        batch["insample_y"] = y[:, :INPUT + 1]
        batch["outsample_y"] = np.concatenate([y[:, INPUT + 1:], y[:, :1]], axis=1)  # last unused
        training = TrainingNoise(0, 0, np.arange(WINDOWS))
        peer.h = TEACHER_FORCED
    with ndwork.optimizations(precision="fp64"):
        ours = forward(model, params, batch, training)[0].data
    try:
        with torch.no_grad():
            theirs = peer({"insample_y": torch.from_numpy(y[..., None]),
                           "insample_mask": torch.ones(y.shape, dtype=torch.float64),
                           "futr_exog": None,
                           "hist_exog": None, "stat_exog": None}).numpy()
    except Exception as e:  # NeuralForecast 3.3's AttentiveLSTM cannot run its forward
        return {"model": label, "parameters": int(params.size), "max relative error": None,
                "agree": f"NeuralForecast fails: {type(e).__name__}: {e}"[:90]}
    error = float(np.abs(ours - theirs.reshape(ours.shape)).max() / np.abs(theirs).max())
    return {"model": label, "parameters": int(params.size), "max relative error": error,
            "agree": error <= TOLERANCE}


def run(quick: bool = False) -> dict:
    return {"rows": [compare(name, options) for name, options in MODELS], "tolerance": TOLERANCE,
            "setup": f"h={H}, input_size={INPUT}, defaults, {WINDOWS} random windows"}


def render(results: dict) -> str:
    return (f"{results['setup']}; tolerance {results['tolerance']:g} of the largest forecast\n"
            + table(results["rows"], ["model", "parameters", "max relative error", "agree"]))
