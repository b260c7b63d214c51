"""Checkpoints as plain data, written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is one dict of tensors, numbers, strings, lists and dicts (never pickled objects), holding
everything needed to resume exactly: model, optimizer, scheduler and gradient-scaler states, the number of
completed epochs, the random-number-generator states, the resolved configuration (neuron hyper-parameters
included), the metrics history and the code version.

It is written to a temporary file in the same folder, flushed to disk, then renamed over the previous one
(``os.replace`` is atomic), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ["FORMAT", "code_version", "get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]

FORMAT = "tdbn-train-checkpoint/1"
REQUIRED = ("format", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "config", "metrics", "version")


def code_version() -> dict[str, str | None]:
    """``{"tdbn": package version, "git": commit of the source tree or None}``."""
    import tdbn

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(tdbn.__file__).resolve().parent, capture_output=True,
            text=True, timeout=5, check=False,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"tdbn": tdbn.__version__, "git": commit}


def get_rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temporary file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` names the file if it is unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint, cannot be read ({type(err).__name__}: {err}); "
            "restore an intact copy or start a new run"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tdbn training checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return data
