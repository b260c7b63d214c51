"""On-disk cache of converted event frames, keyed by everything that affects them, written atomically.

A cache entry is one ``.npy`` file named by the SHA-256 of its key: the conversion code version, the source
file (path, size, modification time), the sample inside it, and every frame parameter. Change any of them and the
entry is simply not found. A file is first written under a temporary name in the same folder, flushed to disk,
then renamed over the final name (``os.replace`` is atomic on POSIX and Windows): an interrupted conversion
leaves at most a stray ``.tmp-*`` file, never a half-written entry under a valid name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FRAMES_VERSION", "FrameCache", "atomic_save_npy"]

#: Bump when :func:`tdbn.data.events.to_frames` or a reader changes what it produces: old entries stop matching.
FRAMES_VERSION = 1


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) so that ``path`` is either absent or complete, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _smallest_uint(frames: np.ndarray) -> np.ndarray:
    """Counts stored in the smallest unsigned type that holds them exactly; non-integral data stay float32."""
    if frames.size == 0 or not np.array_equal(frames, np.round(frames)) or frames.min() < 0:
        return frames.astype(np.float32)
    top = frames.max()
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return frames.astype(dtype)
    return frames.astype(np.float32)


class FrameCache:
    """Frames cached under ``root``; one file per ``(source, sample, parameters)`` key.

    >>> import tempfile
    >>> cache = FrameCache(tempfile.mkdtemp())
    >>> key = cache.key({"file": "a.aedat", "window_ms": 5.0, "n_frames": 10})
    >>> cache.load(key) is None
    True
    >>> cache.save(key, torch.ones(10, 2, 4, 4))
    >>> float(cache.load(key).sum())
    320.0
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(params: Mapping[str, Any]) -> str:
        """A stable hex key of ``params`` (JSON-serialisable values) and :data:`FRAMES_VERSION`."""
        blob = json.dumps({"frames_version": FRAMES_VERSION, **params}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, key: str) -> torch.Tensor | None:
        """The cached frames as float32, or ``None`` when absent (or unreadable: then it is recomputed)."""
        path = self.path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):  # damaged after writing (disk fault, manual edit): recompute
            return None
        return torch.from_numpy(array.astype(np.float32))

    def save(self, key: str, frames: torch.Tensor) -> None:
        atomic_save_npy(self.path(key), _smallest_uint(frames.detach().cpu().numpy()))
