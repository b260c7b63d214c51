"""A trained model and a batch of its own test data, from a ``tdbn train`` checkpoint, for the probes.

The checkpoint stores the resolved configuration (model name and options, neuron hyper-parameters, data set) and
the weights (read with ``weights_only=True``); the model and the test inputs are rebuilt from it exactly as
``tdbn eval`` does, so spikes and operations are measured on the data set the network was trained for.
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
    from ..train import config_from_dict, load_checkpoint
    from ..train.build import build_model
    from ..train.data import build_data

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    checkpoint = load_checkpoint(path)
    cfg = config_from_dict(checkpoint["config"])
    if data_root is not None:
        cfg.data.root = data_root
    cfg.data.test_limit = num_images
    data = build_data(cfg.data, batch_size=num_images, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
    x, _ = next(iter(data.test))
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.input_size)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    meta = {
        "model": cfg.model.name, "options": {k: v for k, v in vars(cfg.model).items() if k != "name"},
        "dataset": cfg.data.name, "images": int(x.shape[1] if data.events else x.shape[0]),
        "input_shape": list(x.shape[2:] if data.events else x.shape[1:]), "events": data.events,
        "weights": f"checkpoint {Path(path)} (epoch {int(checkpoint['epoch'])})",
    }
    return model, x, meta
