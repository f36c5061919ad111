"""Hyper-parameter search and ensembles, spread over threads or dask workers.

Both validate the data once and share that one in-memory copy with every trial (on
dask, one task result per cluster), where NeuralForecast's Auto models copy the data
into each Ray or Optuna trial.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd

from ndwork.core import NeuralForecast
from ndwork.distributed.pool import executor
from ndwork.models.base import TRAINING_DEFAULTS, BaseModel
from ndwork.training.trainer import initial_state, train, validation_loss


def _configurations(model_class: type[BaseModel], grid: dict, fixed: dict) -> list[dict]:
    known = set(model_class._architecture_names()) | set(TRAINING_DEFAULTS)
    unknown = sorted((set(grid) | set(fixed)) - known)
    if unknown:
        raise ValueError(f"grid names {unknown} are not {model_class.__name__} options; its "
                         f"options are {sorted(known)}.")
    for name, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of values.")
    names = list(grid)
    return [{**fixed, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*(grid[n] for n in names))]


def _trial(item):
    """Train one configuration for `steps` more steps (from `state`, if given) and score it."""
    model_class, config, panel, val_size, steps, state = item
    model = model_class(**{**config, "max_steps": steps, "enable_progress_bar": False})
    if state is None:
        state = initial_state(model)
    else:
        state.restart()
    train(model, panel, val_size, 0, state, verbose=False)
    return validation_loss(model, state, panel, val_size, 0), state


def grid_search(model_class: type[BaseModel], grid: dict, df: pd.DataFrame, freq, h: int,
                input_size: int, val_size: int | None = None, static_df=None,
                time_budget_s: float | None = None, halving: bool = False, reduction: int = 2,
                parallel=None, **fixed) -> pd.DataFrame:
    """Train every combination of `grid` and rank them by validation loss.

    grid: {option: [values]}; fixed: options shared by every trial (max_steps, ...).
    The last `val_size` points of each series (default h) are the validation part.
    time_budget_s: launch no trial after this many seconds; those configurations are
    reported as not run. halving: successive halving, that is train every configuration
    briefly, keep the best 1/reduction, train those longer (continuing from their
    weights), until one configuration has had the full max_steps.
    parallel: None, "threads", or dask (True, n, Client, address), as everywhere.
    Returns one row per configuration: its options, valid_loss, steps and status,
    best first.
    """
    fixed = {"h": h, "input_size": input_size, **fixed}
    configs = _configurations(model_class, grid, fixed)
    val_size = h if val_size is None else val_size
    max_steps = fixed.get("max_steps", model_class.DEFAULTS.get("max_steps",
                                                                TRAINING_DEFAULTS["max_steps"]))
    nf = NeuralForecast([model_class(**configs[0])], freq)
    panel = nf._panel(df, static_df)
    start = time.perf_counter()
    results = [{"valid_loss": np.nan, "steps": 0, "status": "not run (time budget)"}
               for _ in configs]
    states: list = [None] * len(configs)
    rounds = math.ceil(math.log(len(configs), reduction)) + 1 if halving else 1
    alive = list(range(len(configs)))
    with executor(parallel, training=True) as pool:
        shared = pool.share(panel)
        for r in range(rounds):
            target = max(1, int(max_steps * reduction ** (r + 1 - rounds)))
            for wave in range(0, len(alive), pool.n_workers):
                if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                    break
                batch = alive[wave:wave + pool.n_workers]
                items = [(model_class, configs[i], shared, val_size,
                          target - results[i]["steps"], states[i]) for i in batch]
                for i, (loss, state) in zip(batch, pool.map(_trial, items), strict=True):
                    states[i] = state
                    results[i].update(valid_loss=loss, steps=target, status="trained")
            if r + 1 < rounds:  # successive halving: keep the best 1/reduction
                ranked = sorted((i for i in alive if results[i]["status"] == "trained"),
                                key=lambda i: results[i]["valid_loss"])
                alive = ranked[:max(1, math.ceil(len(ranked) / reduction))]
                for i in ranked[len(alive):]:
                    results[i]["status"] = f"stopped by halving after {results[i]['steps']} steps"
    frame = pd.DataFrame([{**{k: configs[i][k] for k in grid}, **results[i]}
                          for i in range(len(configs))])
    return frame.sort_values("valid_loss", na_position="last", kind="stable").reset_index(
        drop=True)


def _member(item):
    model, freq, panel, futr_df = item
    nf = NeuralForecast([model], freq)
    nf._fit_panel(panel, 0, 0, False, False)
    return nf.predict(futr_df=futr_df)


def ensemble(models: list[BaseModel], df: pd.DataFrame, freq, combine: str = "median",
             level: list[int] | None = None, static_df=None, futr_df=None,
             parallel=None, name: str = "Ensemble") -> pd.DataFrame:
    """Train several models (other seeds or other models, same h) in parallel and
    combine their forecasts by "mean" or "median"; `level` adds prediction intervals
    from the members' spread (e.g. 80 -> the 10th and 90th percentiles of the members).
    Returns unique_id, ds, name (and name-lo-L / name-hi-L)."""
    if combine not in ("mean", "median"):
        raise ValueError(f"combine={combine!r} must be 'mean' or 'median'.")
    if len({m.h for m in models}) != 1:
        raise ValueError("ensemble members must share h.")
    nf = NeuralForecast(models, freq)
    panel = nf._panel(df, static_df)
    with executor(parallel, training=True) as pool:
        shared = pool.share(panel)
        frames = pool.map(_member, [(m, freq, shared, futr_df) for m in models])
    columns = [repr(m) for m in models]
    stack = np.stack([f[c].to_numpy() for f, c in zip(frames, columns, strict=True)])
    out = frames[0][["unique_id", "ds"]].copy()
    out[name] = stack.mean(axis=0) if combine == "mean" else np.median(stack, axis=0)
    for lv in level or []:
        out[f"{name}-lo-{lv}"] = np.percentile(stack, 50 - lv / 2, axis=0)
        out[f"{name}-hi-{lv}"] = np.percentile(stack, 50 + lv / 2, axis=0)
    return out
