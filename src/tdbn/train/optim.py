"""Optimizer and learning-rate schedule of the paper (appendix C): SGD, lr 0.1, momentum 0.9, step decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def lr_factor(cfg: OptimConfig, epoch: float) -> float:
    """Learning-rate multiplier at (fractional) ``epoch`` from 0.

    ``step``: ``lr_gamma ** floor(epoch / lr_step)`` (the paper: x0.1 every 35 / 45 / 1000 epochs).
    ``cosine``: ``(1 + cos(pi * epoch / epochs)) / 2`` (ours, for short runs). Either is multiplied by a linear
    warm-up from 0.1 to 1 over ``warmup_epochs`` (ours; 0 = none, as in the paper).

    >>> cfg = OptimConfig(schedule="step", lr_step=35, lr_gamma=0.1)
    >>> [round(lr_factor(cfg, e), 6) for e in (0, 34.9, 35, 70)]
    [1.0, 1.0, 0.1, 0.01]
    """
    if cfg.schedule == "step":
        factor = cfg.lr_gamma ** math.floor(epoch / cfg.lr_step + 1e-9)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.epochs) / cfg.epochs))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: step, cosine")
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        factor *= 0.1 + 0.9 * epoch / cfg.warmup_epochs
    return factor


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD with momentum over every parameter; weight decay on all of them (the paper states none: ours)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """A ``LambdaLR`` stepped once per iteration, following :func:`lr_factor` at epoch ``step / steps_per_epoch``.

    The factor is a plain function, so the scheduler's state dict holds only numbers (its step count).
    """

    def factor(step: int) -> float:
        return lr_factor(cfg, step / steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
