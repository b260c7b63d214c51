"""A trained model and a batch of its own test data, from a ``tdbn train`` checkpoint, for the probes.

The model comes from :func:`tdbn.train.restore.restore` (the path ``tdbn eval``, ``tdbn export`` and
``tdbn.load`` share); the test inputs are built from the checkpoint's configuration, so spikes and operations are
measured on the data set the network was trained for.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load_for_analysis(
    path: str | Path, *, num_images: int, data_root: str | None = None
) -> tuple[nn.Module, torch.Tensor, dict]:
    """``(model in eval mode, test inputs, description)`` from the checkpoint at ``path`` (file or run folder).

    The inputs are ``num_images`` test samples (a fixed random subset, seeded by the run's seed): static images
    ``[N, C, H, W]`` or event frames ``[T, N, C, H, W]``. ``data_root`` replaces the data location recorded in the
    checkpoint.
    """
    from ..train.data import build_data
    from ..train.restore import restore

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    run = restore(path)
    cfg = run.config
    if data_root is not None:
        cfg.data.root = data_root
    cfg.data.test_limit = num_images
    data = build_data(cfg.data, batch_size=num_images, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
    x, _ = next(iter(data.test))
    meta = {
        "model": cfg.model.name, "options": {k: v for k, v in vars(cfg.model).items() if k != "name"},
        "dataset": cfg.data.name, "images": int(x.shape[1] if data.events else x.shape[0]),
        "input_shape": list(x.shape[2:] if data.events else x.shape[1:]), "events": data.events,
        "weights": f"checkpoint {run.path} (epoch {run.epoch})",
    }
    return run.model, x, meta
