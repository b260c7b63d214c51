"""Evaluate a saved checkpoint: rebuild the model from its configuration, optionally fused (paper Eq. 9-10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..export.fuse import fuse as fuse_model
from .build import build_model
from .checkpoint import load_checkpoint
from .config import config_from_dict
from .data import build_data
from .distributed import Context, resolve_device
from .engine import evaluate
from .loaders import Shard

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
    the same predictions.
    """
    path = Path(path)
    ckpt_path = path / "checkpoint.pt" if path.is_dir() else path
    checkpoint = load_checkpoint(ckpt_path)
    cfg = config_from_dict(checkpoint["config"])
    if data_root is not None:
        cfg.data.root = data_root
    if test_limit is not None:
        cfg.data.test_limit = test_limit
    dev = resolve_device(device)
    if dev.type != "cuda":  # the Triton LIF kernels need CUDA; the torch kernels compute the same network
        cfg.model.lif_backend = "torch"
    bs = batch_size or 2 * cfg.optim.batch_size
    data = build_data(cfg.data, batch_size=bs, timesteps=cfg.model.timesteps, seed=cfg.seed, device=dev,
                      train=False)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.input_size)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    if fuse:
        model = fuse_model(model)
    model.to(dev, getattr(torch, cfg.dtype))
    stats = evaluate(model, data.test, Context(Shard(), dev), progress=progress, desc="eval fused" if fuse else "eval")
    return {
        "checkpoint": str(ckpt_path), "epoch": int(checkpoint["epoch"]), "model": cfg.model.name,
        "data": cfg.data.name, "fused": fuse, "top1": stats["top1"], "top5": stats["top5"], "loss": stats["loss"],
        "firing_rate": stats["firing_rate"], "samples": stats["samples"], "neuron": checkpoint.get("neuron", {}),
        "version": checkpoint["version"],
    }
