"""Optimizer and learning-rate schedule of the paper (appendix C): SGD, lr 0.1, momentum 0.9, step decay.

The one definition of every schedule (``optim.schedule``) in the package: ``tdbn train`` follows it per iteration,
and the analysis studies (:mod:`tdbn.analysis.training`) train through the same optimizer and schedule, with one
iteration as the schedule's epoch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import SCHEDULES, OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def lr_factor(cfg: OptimConfig, epoch: float) -> float:
    """Learning-rate multiplier at (fractional) ``epoch`` from 0.

    ``step``: ``lr_gamma ** floor(epoch / lr_step)`` (the paper: x0.1 every 35 / 45 / 1000 epochs).
    ``cosine``: ``(1 + cos(pi * epoch / epochs)) / 2`` (ours, for short runs).
    ``multistep``: ``lr_gamma ** k``, ``k`` the number of ``lr_milestones`` reached; a milestone is a fraction of
    the budget, reached from the start of epoch ``floor(fraction * epochs)`` (whole epochs, as a per-epoch
    ``MultiStepLR``; the default ``[0.5, 0.75]``: x0.1 at 1/2 and again at 3/4 of the run, the common ResNet recipe).
    Like ``cosine`` it stretches with ``epochs``. ``constant``: 1.
    Each is multiplied by a linear warm-up from 0.1 to 1 over ``warmup_epochs`` (ours; 0 = none, as in the paper).

    >>> cfg = OptimConfig(schedule="step", lr_step=35, lr_gamma=0.1)
    >>> [round(lr_factor(cfg, e), 6) for e in (0, 34.9, 35, 70)]
    [1.0, 1.0, 0.1, 0.01]
    >>> cfg = OptimConfig(schedule="multistep", epochs=90, lr_milestones=[0.5, 0.75])  # from epochs 45 and 67
    >>> [round(lr_factor(cfg, e), 6) for e in (0, 44.9, 45, 66.9, 67, 89)]
    [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """
    if cfg.schedule == "step":
        factor = cfg.lr_gamma ** math.floor(epoch / cfg.lr_step + 1e-9)
    elif cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.epochs) / cfg.epochs))
    elif cfg.schedule == "multistep":
        factor = cfg.lr_gamma ** sum(epoch >= math.floor(m * cfg.epochs + 1e-9) for m in cfg.lr_milestones)
    elif cfg.schedule == "constant":
        factor = 1.0
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        factor *= 0.1 + 0.9 * epoch / cfg.warmup_epochs
    return factor


def norm_parameters(model: nn.Module) -> set[int]:
    """Ids of the parameters ``optim.norm_weight_decay`` applies to: every parameter of a normalization (tdBN, BN
    and the successors, the MPBN neuron's membrane BN; PyTorch's own norms too) and every bias."""
    from ..layers.batch_state import Synchronizable

    ids = {id(p) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    for module in model.modules():
        if isinstance(module, (Synchronizable, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum over every parameter (the paper's; ``nesterov`` ours), or AdamW (``optimizer="adamw"``,
    ours: betas ``(momentum, 0.999)``, decoupled weight decay). Weight decay (the paper states none: ours) is
    ``weight_decay`` on the weights, and ``norm_weight_decay`` on the normalizations' parameters and the biases
    (:func:`norm_parameters`; ``None``: ``weight_decay`` too, one group as before).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    >>> opt = build_optimizer(net, OptimConfig(weight_decay=5e-4, norm_weight_decay=0.0))
    >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [(1, 0.0005), (3, 0.0)]
    """
    if cfg.optimizer == "adamw":
        make, kw = torch.optim.AdamW, dict(lr=cfg.lr, betas=(cfg.momentum, 0.999))
    elif cfg.optimizer == "sgd":
        make, kw = torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adamw")
    if cfg.norm_weight_decay is None or cfg.norm_weight_decay == cfg.weight_decay:
        return make(model.parameters(), weight_decay=cfg.weight_decay, **kw)
    special = norm_parameters(model)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) not in special], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) in special], "weight_decay": cfg.norm_weight_decay}]
    return make([g for g in groups if g["params"]], **kw)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, *,
                    start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per iteration, following :func:`lr_factor` at epoch ``step / steps_per_epoch``.

    The factor is a plain function of the global step, so the scheduler's state dict holds only numbers (its step
    count), and a resumed run builds its schedule at the step it reached (``start_step``; its optimizer restored
    first, whose groups hold the base learning rates as ``initial_lr``): the schedule of ``cfg``, which may have
    more epochs than the run it continues, with every group's learning rate set for that step.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> cfg = OptimConfig(epochs=2, schedule="cosine")
    >>> sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    >>> for _ in range(5):
    ...     opt.step(); sched.step()
    >>> later = build_scheduler(opt, cfg, steps_per_epoch=10, start_step=5)
    >>> later.last_epoch, later.get_last_lr() == sched.get_last_lr()
    (5, True)
    """
    def factor(step: int) -> float:
        return lr_factor(cfg, step / steps_per_epoch)

    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_step - 1)
