"""Checkpoints: a directory of .npz arrays (allow_pickle=False) and one JSON file.

Written under a temporary name in the same parent and renamed into place, so a
crash never leaves a half-written checkpoint. Loading checks the version, the files
and every array's shape, and names what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = 1
META = "ndwork.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, from another model or of the wrong shapes."""


def write_atomic(path: str | os.PathLike, meta: dict, arrays: dict[str, dict[str, np.ndarray]],
                 overwrite: bool = False) -> None:
    """Write meta as JSON and each arrays[name] as name.npz into directory `path`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, group in arrays.items():
            with open(tmp / f"{name}.npz", "wb") as f:
                np.savez(f, allow_pickle=False, **group)
                f.flush()
                os.fsync(f.fileno())
        with open(tmp / META, "w") as f:
            json.dump({"format": FORMAT, **meta}, f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def read_meta(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint directory at {path}.")
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {META}; it is incomplete.") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / META} is corrupt ({e}); save the model again.") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}; this "
                              f"ndwork reads format {FORMAT}.")
    return meta


def read_arrays(path: str | os.PathLike, name: str,
                expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Read name.npz; with `expected`, check that those arrays exist with those shapes."""
    file = Path(path) / f"{name}.npz"
    if not file.exists():
        raise CheckpointError(f"checkpoint file {file} is missing.")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint file {file} is corrupt or truncated ({e}).") from None
    for key, shape in (expected or {}).items():
        if key not in arrays:
            raise CheckpointError(f"{file} has no array {key!r}: it was saved by another model.")
        if tuple(arrays[key].shape) != tuple(shape):
            raise CheckpointError(f"{file}: {key!r} has shape {arrays[key].shape}, the model "
                                  f"expects {tuple(shape)}; the hyper-parameters differ.")
    return arrays


def rng_to_json(rng: np.random.Generator) -> dict:
    state = rng.bit_generator.state
    return json.loads(json.dumps(state, default=str))


def rng_from_json(state: dict) -> np.random.Generator:
    state = json.loads(json.dumps(state))
    bit = getattr(np.random, state["bit_generator"])()
    inner = {k: int(v) for k, v in state["state"].items()}
    bit.state = {**state, "state": inner}
    return np.random.Generator(bit)
