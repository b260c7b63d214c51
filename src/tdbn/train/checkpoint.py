"""Checkpoints as plain data, verified by a SHA-256 digest, written atomically, the previous one kept.

A checkpoint is one dict of tensors, numbers, strings, lists and dicts (never pickled objects), read with
``torch.load(weights_only=True)``. Format ``tdbn-train-checkpoint/2`` holds:

``format``, ``epoch`` (completed epochs), ``model`` (state dict), ``model_name`` (registry name, for
``tdbn.models.create``), ``model_kwargs`` (its constructor arguments, plain data: ``num_classes``,
``in_channels``, ``width``, ``timesteps``, ...), ``input`` (``{"events": bool, "shape": [C, H, W]}``, what the
model was trained on), ``optimizer``, ``scheduler``, ``scaler`` (states), ``rng`` (generator states), ``config``
(the resolved configuration), ``neuron`` (neuron and tdBN hyper-parameters), ``metrics`` (history), ``version``
(package version and git commit) and ``world_size``. Format ``/1`` (no ``model_name``, ``model_kwargs``,
``input``) still loads: :func:`tdbn.train.restore.model_spec` rebuilds its constructor arguments.

Integrity: the file is the ``torch.save`` body followed by one trailer line ``tdbn-sha256:<hex digest of the
body>``; every load checks it before unpickling, so a changed byte anywhere in the file raises
:class:`CheckpointError` naming the file (``torch.load(path)`` still reads the file directly).

Writing: a temporary file ``.NAME.tmp-PID`` in the same folder is flushed to disk, the current ``checkpoint.pt``
(if its digest verifies) is renamed to ``checkpoint.prev.pt``, then the temporary file is renamed to
``checkpoint.pt`` (each rename is atomic), so a crash at any point leaves at least one good checkpoint. A full
disk or a permission problem raises :class:`CheckpointWriteError` (one line naming the path) with the previous
checkpoint intact. Leftover temporary files of killed writes are removed by :func:`remove_leftovers`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..messages import warn as warn_user
from .errors import CheckpointError, CheckpointWriteError

__all__ = [
    "CHECKPOINT", "FORMAT", "PREVIOUS", "checkpoint_digest", "code_version", "find_checkpoint", "get_rng_state",
    "is_run_folder", "load_checkpoint", "load_latest", "missing_checkpoint", "non_finite_tensors", "remove_leftovers",
    "run_folders", "save_checkpoint", "set_rng_state",
]

FORMAT = "tdbn-train-checkpoint/2"
LEGACY_FORMATS = ("tdbn-train-checkpoint/1",)
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED = ("format", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "config", "metrics", "version")
REQUIRED_V2 = ("model_name", "model_kwargs", "input")
_MAGIC = b"\ntdbn-sha256:"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of an HDF5 file, such as a NIR graph
_TRAILER = len(_MAGIC) + 64 + 1  # magic, hex digest, newline


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


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors (and floats) in ``obj`` holding NaN or infinity."""
    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += non_finite_tensors(v, f"{prefix}[{i}]")
    return bad


def _body_and_digest(data: bytes) -> tuple[bytes, str | None]:
    """Split a file into its ``torch.save`` body and the digest of its trailer (None: no trailer)."""
    tail = data[-_TRAILER:]
    if len(data) > _TRAILER and tail.startswith(_MAGIC) and tail.endswith(b"\n"):
        return data[:-_TRAILER], tail[len(_MAGIC):-1].decode("ascii", errors="replace")
    return data, None


def checkpoint_digest(path: str | Path) -> str:
    """The SHA-256 digest a checkpoint file carries in its trailer (read from its last bytes, without verifying the
    body); for a file without one (an older format), the digest of the whole file. It names one checkpoint: a
    result computed from it can record it (``tdbn eval``'s JSON files)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - _TRAILER))
        tail = f.read()
    if size > _TRAILER and tail.startswith(_MAGIC) and tail.endswith(b"\n"):
        return tail[len(_MAGIC):-1].decode("ascii", errors="replace")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return body + _MAGIC + hashlib.sha256(body).hexdigest().encode("ascii") + b"\n"


def _verifies(path: Path) -> bool:
    try:
        body, digest = _body_and_digest(path.read_bytes())
    except OSError:
        return False
    return digest is not None and hashlib.sha256(body).hexdigest() == digest


def _fsync_dir(folder: Path) -> None:
    try:  # make the renames themselves durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


_WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EROFS: "read-only file system"}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically, keeping the replaced file as ``checkpoint.prev.pt``.

    Refuses (:class:`CheckpointError`) a payload holding a NaN or infinite tensor: no such checkpoint is ever
    written. A full disk or a permission error raises :class:`CheckpointWriteError` naming the path; the files
    already there are left as they were.
    """
    path = Path(path)
    bad = non_finite_tensors({k: payload[k] for k in ("model", "optimizer") if k in payload})
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: not written: non-finite values in {shown}")
    previous = path.with_name(PREVIOUS if path.name == CHECKPOINT else f"{path.stem}.prev{path.suffix}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        data = _encode(payload)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            if _verifies(path):
                os.replace(path, previous)
            else:  # never let a damaged file push out the last good one
                warn_user(f"{path} fails its digest check; keeping {previous} and replacing {path}")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = _WRITE_ERRORS.get(err.errno)
        if reason is None:
            raise
        intact = [str(p) for p in (path, previous) if p.exists()]
        kept = f"the previous checkpoint {intact[0]} is intact" if intact else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"{reason} while writing {path}; {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.*.tmp-PID``) that killed checkpoint writes left in ``folder``."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.pt.tmp-*"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file of ``path``: the file itself, or ``<run folder>/checkpoint.pt``."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a run folder: it holds a checkpoint or the configuration a run writes first."""
    return any((Path(path) / name).is_file() for name in (CHECKPOINT, PREVIOUS, "config.json"))


def run_folders(path: str | Path) -> list[Path]:
    """The run folders directly inside ``path`` (e.g. ``runs/``), oldest first (by modification time)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted((p for p in path.iterdir() if p.is_dir() and is_run_folder(p)), key=lambda p: p.stat().st_mtime)


def missing_checkpoint(path: str | Path) -> CheckpointError:
    """The error for ``path`` (a checkpoint file or a run folder) when it holds no checkpoint, saying what the path
    is instead: nothing (no such file or folder), a folder of run folders (naming them, the newest first), a run
    folder stopped before its first checkpoint, or a folder that is no run folder; with the ``*.pt`` files there.
    """
    path = Path(path)
    if path.is_dir():
        runs = run_folders(path)
        if runs and not is_run_folder(path):
            shown = ", ".join(p.name for p in runs[::-1][:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
            return CheckpointError(f"{path} is a folder of run folders, not a run folder: it holds {len(runs)} "
                                   f"run{'s' if len(runs) > 1 else ''} ({shown}); name one of them, e.g. {runs[-1]} "
                                   "(the newest)")
        folder = path
        problem = (f"{path / CHECKPOINT}: checkpoint not found ("
                   + (f"the run folder {path} has no {CHECKPOINT} yet" if is_run_folder(path) else
                      f"{path} is not a run folder: it holds neither {CHECKPOINT} nor config.json"))
    else:
        folder, problem = path.parent, f"{path}: checkpoint not found (no such file or folder"
    held = sorted(p.name for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []
    there = f"; {folder} holds {', '.join(held)}" if held else ""
    return CheckpointError(f"{problem}{there})")


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint (file or run folder) with ``weights_only=True``.

    Raises :class:`CheckpointError` naming the file when it is missing, fails its digest check, cannot be read,
    or is not a tdbn training checkpoint.
    """
    given, path = path, find_checkpoint(path)
    if not path.is_file():
        raise missing_checkpoint(given)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from None
    if raw.startswith(HDF5_SIGNATURE):  # what tdbn export writes: a common mix-up, not a damaged checkpoint
        what = "a NIR graph (an HDF5 file)" if path.suffix.lower() == ".nir" else "an HDF5 file (as NIR graphs are)"
        raise CheckpointError(f"{path} is {what}, not a training checkpoint: pass the run folder that tdbn train "
                              "wrote (or its checkpoint.pt); a NIR graph runs with tdbn.export.from_nir(path)")
    body, digest = _body_and_digest(raw)
    previous = path.with_name(PREVIOUS)
    advice = (f"; the previous checkpoint {previous} may be intact" if previous.is_file() and previous != path
              else "; restore an intact copy or start a new run")
    if digest is not None and hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(f"{path}: corrupted checkpoint, its content does not match its SHA-256 digest{advice}")
    try:
        data = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure of the unpickler means an unusable file
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint, cannot be read ({type(err).__name__}){advice}"
        ) from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise CheckpointError(f"{path}: not a tdbn training checkpoint (expected format {FORMAT!r})")
    if data["format"] == FORMAT and digest is None:
        raise CheckpointError(f"{path}: corrupted checkpoint, its digest line is missing or damaged{advice}")
    required = REQUIRED + (REQUIRED_V2 if data["format"] == FORMAT else ())
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    if not isinstance(data["epoch"], int) or data["epoch"] < 0 or (
            isinstance(data.get("metrics"), list) and any(not isinstance(r, dict) for r in data["metrics"])):
        raise CheckpointError(f"{path}: corrupted checkpoint (implausible epoch or metrics)")
    return data


def load_latest(run_dir: str | Path, *, warn=None) -> tuple[dict[str, Any], Path]:
    """``(checkpoint, its file)``: ``checkpoint.pt`` of ``run_dir``, else ``checkpoint.prev.pt`` with a warning.

    ``warn(message)`` reports the fallback (default: :func:`tdbn.messages.warn`, a warning naming the caller's
    line). When neither loads, the error names both files and why each failed.
    """
    run_dir = Path(run_dir)
    newest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not newest.is_file() and not previous.is_file():
        raise missing_checkpoint(run_dir)
    try:
        return load_checkpoint(newest), newest
    except CheckpointError as err:
        if not previous.is_file():
            raise
        reason = str(err).replace(f"; the previous checkpoint {previous} may be intact", "")  # it is tried now
        try:
            data = load_checkpoint(previous)
        except CheckpointError as prev_err:
            raise CheckpointError(f"both checkpoints of {run_dir} fail to load: {reason}; {prev_err}") from None
        message = f"{reason}; resuming from the previous checkpoint {previous} (epoch {data['epoch']}) instead"
        (warn or warn_user)(message)
        return data, previous
