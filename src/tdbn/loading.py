"""``tdbn.load`` and ``tdbn.saved_config``: a trained run back in Python in one line::

    model = tdbn.load("runs/mnist-20260101-120000")   # a run folder or its checkpoint.pt; eval mode
    predictions = model(images).argmax(1)             # images normalized as in training

Both go through :func:`tdbn.train.restore.restore`, the path ``tdbn eval``, ``tdbn export`` and ``tdbn analyze`` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .train.config import TrainConfig

__all__ = ["load", "saved_config"]


def load(path: str | Path, *, fuse: bool = False, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run folder or checkpoint file, in eval mode with its weights, on ``device``.

    The checkpoint's SHA-256 digest is verified first (``tdbn.train.CheckpointError`` names a damaged file).
    ``fuse=True`` returns the fully spiking network of Eq. 9-10 (``tdbn.fuse``), which gives the same outputs.
    The model takes what the run was trained on: normalized float images ``[N, C, H, W]`` (normalization:
    ``saved_config(path).data.options["mean"]`` / ``["std"]``) or event frames ``[T, N, C, H, W]``; other inputs
    (uint8 images, another image size for ResNet-17/19) raise a ``ValueError`` saying what to pass instead.
    """
    from .train.restore import check_input, restore

    run = restore(path, fuse=fuse, device=device)

    def _check(_module: nn.Module, args: tuple) -> None:
        if args:
            check_input(args[0], events=run.events, input_shape=run.input_shape, sized=run.sized,
                        where=f"{run.config.model.name} from {run.path}")

    run.model.register_forward_pre_hook(_check)
    return run.model


def saved_config(path: str | Path) -> TrainConfig:
    """The resolved configuration of a run folder or checkpoint file (``tdbn.train.TrainConfig``).

    It holds everything the run was trained with: model, data set and its normalization
    (``cfg.data.options["mean"]`` / ``["std"]``), optimizer, seed.
    """
    from .train.run import saved_config as _saved

    return _saved(path)
