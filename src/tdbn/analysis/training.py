"""The SGD loop of the analysis studies: a fixed number of seeded iterations, the training stack's optimizer and
learning-rate schedule.

The full training path (data pipelines, checkpoints, precision, processes) lives in :mod:`tdbn.train`; the studies
here only need a few hundred identical, seeded iterations per network. They train through its optimizer
(:func:`~tdbn.train.optim.build_optimizer`: SGD with momentum, the paper's) and its schedule
(:func:`~tdbn.train.optim.build_scheduler`, a ``LambdaLR`` over :func:`~tdbn.train.optim.lr_factor`), with one
iteration as the schedule's epoch: a schedule has one definition in the package, and its name means the same in
``tdbn analyze`` as in ``tdbn train``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..train.config import OptimConfig
from ..train.optim import build_optimizer, build_scheduler
from .probes import inference

SCHEDULES = ("constant", "cosine", "multistep")
"""The training stack's schedules a study can follow: those set by the budget alone (``step`` needs a period)."""

RENAMED = {"step": "multistep"}
"""Schedule names of earlier versions of the analysis studies, with the name of the same schedule now: ``step``
(lr/10 at 1/2 and again at 3/4 of the budget) is ``multistep`` with its default milestones; in the training stack
``step`` is the paper's decay every ``optim.lr_step`` epochs."""


def check_schedule(schedule: str) -> None:
    """``ValueError`` unless ``schedule`` is one of :data:`SCHEDULES`; a renamed one names its replacement."""
    if schedule in RENAMED:
        raise ValueError(f"schedule {schedule!r} (lr/10 at 1/2 and 3/4 of the budget) is now called "
                         f"{RENAMED[schedule]!r}, as in the training stack, where {schedule!r} decays every "
                         f"optim.lr_step epochs; use {RENAMED[schedule]!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def optim_config(
    *, iterations: int, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant"
) -> OptimConfig:
    """The training stack's optimizer settings for ``iterations`` SGD steps of a study: ``optim.epochs`` =
    ``iterations``, so that a schedule stepped once per iteration (``steps_per_epoch=1``) spans the budget.

    ``"constant"``: ``lr`` throughout; ``"cosine"``: ``lr / 2 x (1 + cos(pi step / iterations))`` (no restart, no
    warm-up); ``"multistep"``: ``lr`` divided by 10 from step ``iterations // 2`` and again from
    ``(3 * iterations) // 4`` (the default milestones 1/2 and 3/4, rounded down to whole iterations); see
    :func:`~tdbn.train.optim.lr_factor`.

    Example:
        >>> from tdbn.train.optim import lr_factor
        >>> cfg = optim_config(iterations=8, lr=0.1, schedule="multistep")
        >>> [round(cfg.lr * lr_factor(cfg, step), 6) for step in range(8)]
        [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_schedule(schedule)
    return OptimConfig(epochs=iterations, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule)


def sgd_steps(
    model: nn.Module,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    iterations: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    after_backward: Callable[[nn.Module], None] | None = None,
    after_step: Callable[[int, list[float]], None] | None = None,
) -> list[float]:
    """Train ``model`` for ``iterations`` mini-batches from ``data`` with softmax cross-entropy (Eq. 12-13).

    The optimizer and the learning rate of every step are the training stack's for :func:`optim_config`
    (``schedule`` = ``"constant"``, ``"cosine"`` or ``"multistep"``). ``after_backward(model)`` runs after each
    backward pass, before the update (to read gradients); ``after_step(i, losses)`` after the update of step ``i``
    (0-based; to evaluate). Stops early, returning the losses so far, when a loss is not finite (the run diverged).
    """
    cfg = optim_config(iterations=iterations, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=1)  # sets the learning rate of step 0
    model.train()
    losses: list[float] = []
    for step in range(iterations):
        x, y = next(data)
        loss = F.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(model)
        opt.step()
        sched.step()  # the learning rate of the next step
        if after_step is not None:
            after_step(step, losses)
    return losses


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode, running statistics) on ``x``, ``y``."""
    correct = 0
    with inference(model):
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)
