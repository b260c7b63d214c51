"""Evaluate a saved checkpoint: the model from :func:`~tdbn.train.restore.restore`, optionally fused (Eq. 9-10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import DataNotFoundError
from .data import build_data
from .distributed import Context, resolve_device
from .engine import evaluate
from .loaders import Shard
from .restore import restore

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    path: str | Path,
    *,
    data_root: str | None = None,
    fuse: bool = False,
    device: str | None = None,
    batch_size: int | None = None,
    test_limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy, loss and mean firing rate of a checkpoint on its data set's test split (fp32).

    ``path`` is a checkpoint file or a run folder. ``data_root`` replaces the data folder recorded in the
    checkpoint; ``fuse=True`` evaluates ``tdbn.fuse(model)``, the normalization-free network, which must give
    the same predictions. ``test_limit`` (>= 1) evaluates a fixed random subset.
    """
    if test_limit is not None and test_limit < 1:
        raise ValueError(f"the test limit must be >= 1 sample, got {test_limit} (omit --limit for the whole split)")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"the batch size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    run = restore(path, fuse=fuse, device=dev)
    cfg = run.config
    if data_root is not None:
        cfg.data.root = data_root
    if test_limit is not None:
        cfg.data.test_limit = test_limit
    bs = batch_size or 2 * cfg.optim.batch_size
    try:
        data = build_data(cfg.data, batch_size=bs, timesteps=cfg.model.timesteps, seed=cfg.seed, device=dev,
                          train=False)
    except DataNotFoundError as err:
        raise DataNotFoundError(err.path, expected=err.expected, problem=err.problem,
                                source=f"{err.source}\n(the data location recorded in the checkpoint; "
                                       "pass --data ROOT, or data_root=..., to use another)") from None
    stats = evaluate(run.model, data.test, Context(Shard(), dev), progress=progress,
                     desc="eval fused" if fuse else "eval")
    return {
        "checkpoint": str(run.path), "epoch": run.epoch, "model": cfg.model.name,
        "data": cfg.data.name, "fused": fuse, "top1": stats["top1"], "top5": stats["top5"], "loss": stats["loss"],
        "firing_rate": stats["firing_rate"], "samples": stats["samples"], "neuron": run.checkpoint.get("neuron", {}),
        "version": run.checkpoint["version"],
    }
