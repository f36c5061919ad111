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
from ndwork.interop import torch_to_ndwork

MODELS = [("RNN", {}), ("LSTM", {}), ("GRU", {}), ("TCN", {}), ("BiTCN", {}), ("DilatedRNN", {}),
          ("DilatedRNN", {"cell_type": "RNN"}), ("DilatedRNN", {"cell_type": "GRU"}),
          ("DilatedRNN", {"cell_type": "ResLSTM"}), ("DilatedRNN", {"cell_type": "AttentiveLSTM"}),
          ("xLSTM", {}), ("xLSTM", {"backbone": "sLSTM"}),
          ("RNN", {"recurrent": True}), ("LSTM", {"recurrent": True}),
          ("GRU", {"recurrent": True}), ("LSTM", {"recurrent": True, "encoder_n_layers": 3}),
          # DeepAR's training forward compared without its default lstm_dropout=0.1
          ("DeepAR", {"lstm_dropout": 0.0}),
          ("DeepAR", {"lstm_dropout": 0.0, "decoder_hidden_layers": 1, "decoder_hidden_size": 16}),
          ("DeepNPTS", {}),
          # factor=8: ProbSparse attention reads every key and query (NeuralForecast draws
          # the sampled ones at random)
          ("Informer", {"factor": 8}), ("Informer", {"factor": 8, "distil": False})]
RECURSIVE = ("DeepAR",)  # trained teacher-forced, as recurrent=True
TEACHER_FORCED = 4  # targets of the recurrent=True comparison
H, INPUT, WINDOWS = 12, 24, 8
# the xlstm package starts the gates' input weights and sLSTM's recurrent weights at zero,
# which would leave them out of the comparison: every weight gets N(0, 0.05^2) noise first
ZERO_INITIALIZED = ("xLSTM",)
TOLERANCE = 1e-4  # max |ndwork - NeuralForecast| / max |NeuralForecast|


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
                              peer.named_parameters() if not n.startswith("loss.")],
                             model.spec.shapes)  # the loss's quantiles are not weights
    rng = np.random.default_rng(seed)
    label = " ".join([name] + [f"{k}={v}" for k, v in options.items()])
    recurrent = options.get("recurrent", False) or name in RECURSIVE
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


# --- losses -----------------------------------------------------------------------------
LOSS_TOLERANCE = 1e-6  # max |ndwork - NeuralForecast| / max |NeuralForecast|, float64
DISTRIBUTIONS = [("Normal", {}), ("StudentT", {}), ("Poisson", {}), ("NegativeBinomial", {}),
                 ("Bernoulli", {}), ("Tweedie", {"rho": 1.5}), ("ISQF", {}),
                 ("ISQF", {"num_pieces": 2, "quantiles": [0.1, 0.5, 0.9]})]


def _loss_inputs(rng, n_outputs: int, counts: bool, binary: bool):
    """Raw outputs from -10 to 10 (the tails), targets, windows' positive loc and scale."""
    raw = rng.uniform(-10, 10, size=(WINDOWS, H, n_outputs))
    if binary:
        y = rng.integers(0, 2, (WINDOWS, H)).astype(float)
    elif counts:
        y = rng.poisson(rng.uniform(0, 50, (WINDOWS, 1)), (WINDOWS, H)).astype(float)
    else:
        y = rng.normal(0, 30, (WINDOWS, H))
    return raw, y, rng.uniform(0.5, 20, WINDOWS), rng.uniform(0.5, 5, WINDOWS)


def compare_distribution(name: str, options: dict, seed: int = 0) -> dict:
    """-log p(y) per point: NeuralForecast's domain map, scale decoupling and torch
    distribution against ndwork's likelihood kernel."""
    import torch
    from neuralforecast.losses.pytorch import DistributionLoss as Theirs

    from ndwork.kernels import compiled
    from ndwork.losses import DistributionLoss

    ours = DistributionLoss(name, **options)
    theirs = Theirs(name, **options)
    if name == "ISQF":  # NF keeps its quantile knots in float32: float64 here, as the rest
        import functools

        from neuralforecast.losses.pytorch import isqf_domain_map

        theirs.domain_map = functools.partial(isqf_domain_map, num_pieces=ours.num_pieces,
                                              quantiles=torch.from_numpy(ours.knots))
    rng = np.random.default_rng(seed)
    raw, y, loc, scale = _loss_inputs(rng, ours.outputsize_multiplier, ours.kind in (
        "poisson", "negbin", "tweedie"), name == "Bernoulli")
    args = theirs.scale_decouple(theirs.domain_map(torch.from_numpy(raw)),
                                 loc=torch.from_numpy(loc)[:, None, None],
                                 scale=torch.from_numpy(scale)[:, None, None])
    distribution = theirs.get_distribution(args, **theirs.distribution_kwargs)
    expected = -distribution.log_prob(torch.from_numpy(y)[..., None]).numpy().reshape(-1)
    if ours.kind == "isqf":  # autodiff ops, not a kernel: its per-point loss
        from ndwork.autodiff.tensor import Tensor
        from ndwork.losses import isqf

        got = isqf.nll(Tensor(raw.reshape(-1, raw.shape[-1])), y.reshape(-1), np.repeat(loc, H),
                       np.repeat(scale, H), ours.knots, ours.num_pieces).data
    else:
        got = compiled("nll")(ours.kind, raw.reshape(-1, raw.shape[-1]), y.reshape(-1),
                              np.repeat(loc, H), np.repeat(scale, H), ours.param)[0]
    label = ", ".join([repr(name)] + [f"{k}={v}" for k, v in options.items()])
    return _loss_row(f"DistributionLoss({label})", got, expected)


def compare_mixture(name: str, options: dict, seed: int = 0) -> dict:
    """The weighted mean negative log-likelihood of a mixture, NeuralForecast's against
    ndwork's (value and gradient of the raw outputs)."""
    import torch
    from neuralforecast.losses import pytorch as theirs_module

    from ndwork import losses

    ours, theirs = getattr(losses, name)(**options), getattr(theirs_module, name)(**options)
    rng = np.random.default_rng(seed)
    raw, y, loc, scale = _loss_inputs(rng, ours.outputsize_multiplier, name != "GMM", False)
    raw = raw / 3
    mask = (rng.random((WINDOWS, H)) > 0.1).astype(float)
    x = torch.from_numpy(raw).requires_grad_()
    args = theirs.scale_decouple(theirs.domain_map(x), loc=torch.from_numpy(loc)[:, None, None],
                                 scale=torch.from_numpy(scale)[:, None, None])
    value = theirs(y=torch.from_numpy(y)[..., None], distr_args=args,
                   mask=torch.from_numpy(mask)[..., None])
    value.backward()
    got, grad = ours.nll(raw, y, mask, loc, scale)
    row = _loss_row(f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})",
                    np.r_[got, grad.reshape(-1)], np.r_[value.item(), x.grad.numpy().reshape(-1)])
    return row


def compare_point_loss(name: str, options: dict, seed: int = 0) -> dict:
    import torch
    from neuralforecast.losses import pytorch as theirs_module

    from ndwork import losses

    ours, theirs = getattr(losses, name)(**options), getattr(theirs_module, name)(**options)
    rng = np.random.default_rng(seed)
    k = ours.outputsize_multiplier
    y, y_hat = rng.normal(size=(WINDOWS, H)), rng.normal(size=(WINDOWS, H, k))
    insample, mask = rng.normal(size=(WINDOWS, INPUT)), np.ones((WINDOWS, H))
    t = torch.from_numpy
    if k > 1:  # NeuralForecast keeps the quantiles in level order, ndwork sorted
        order = getattr(theirs, "quantiles", None)
        order = (order if order is not None else theirs.mql.quantiles).numpy()
        theirs_hat = t(y_hat[..., [int(np.argmin(np.abs(ours.quantiles - q))) for q in order]])
        theirs_hat = theirs_hat[:, :, None, :]
    else:
        theirs_hat = t(y_hat)
    expected = theirs(y=t(y)[..., None], y_hat=theirs_hat, y_insample=t(insample),
                      mask=t(mask)[..., None]).item()
    got = ours.value(y_hat, y, mask, insample)
    return _loss_row(f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})",
                     np.array([got]), np.array([expected]))


def _loss_row(label, got, expected) -> dict:
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    return {"loss": label, "points": int(np.size(expected)), "max relative error": error,
            "agree": error <= LOSS_TOLERANCE}


MIXTURES = [("PMM", {"n_components": 3}), ("PMM", {"n_components": 3, "weighted": True}),
            ("PMM", {"n_components": 2, "horizon_correlation": True}),
            ("GMM", {"n_components": 2, "weighted": True}), ("NBMM", {"n_components": 2})]
POINT_LOSSES = [("RMSE", {}), ("MASE", {"seasonality": 4}), ("HuberQLoss", {"q": 0.3}),
                ("HuberMQLoss", {"level": [80, 90]}), ("sCRPS", {"level": [80]}),
                ("FreDF", {"alpha": 0.3})]


def run(quick: bool = False) -> dict:
    losses = ([compare_distribution(n, o) for n, o in DISTRIBUTIONS]
              + [compare_mixture(n, o) for n, o in MIXTURES]
              + [compare_point_loss(n, o) for n, o in POINT_LOSSES])
    return {"rows": [compare(name, options) for name, options in MODELS], "tolerance": TOLERANCE,
            "setup": f"h={H}, input_size={INPUT}, defaults, {WINDOWS} random windows",
            "losses": losses, "loss_tolerance": LOSS_TOLERANCE}


def render(results: dict) -> str:
    text = (f"{results['setup']}; tolerance {results['tolerance']:g} of the largest forecast\n"
            + table(results["rows"], ["model", "parameters", "max relative error", "agree"]))
    if "losses" in results:
        text += (f"\n\nLosses against NeuralForecast's on raw outputs in [-10, 10] (tails), "
                 f"float64; tolerance {results['loss_tolerance']:g} of the largest value\n"
                 + table(results["losses"], ["loss", "points", "max relative error", "agree"]))
    return text
