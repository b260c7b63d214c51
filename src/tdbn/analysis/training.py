"""A minimal SGD loop for the analysis studies (fixed number of iterations, paper optimizer: SGD + momentum).

The full training path (schedules, checkpoints, data pipelines) lives in :mod:`tdbn.train`; the studies here only
need a few hundred identical, seeded iterations per network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .probes import inference


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

    The learning rate of step ``i`` is :func:`scheduled_lr` (``schedule`` = ``"constant"``, ``"cosine"`` or
    ``"step"``). ``after_backward(model)`` runs after each backward pass, before the update (to read gradients);
    ``after_step(i, losses)`` after the update of step ``i`` (0-based; to evaluate). Stops early, returning the
    losses so far, when a loss is not finite (the run diverged).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    scheduled_lr(0, lr=lr, iterations=iterations, schedule=schedule)  # validates the schedule's name
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    for step in range(iterations):
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(step, lr=lr, iterations=iterations, schedule=schedule)
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
        if after_step is not None:
            after_step(step, losses)
    return losses


SCHEDULES = ("constant", "cosine", "step")


def scheduled_lr(step: int, *, lr: float, iterations: int, schedule: str) -> float:
    """Learning rate of SGD step ``step`` (0-based) of ``iterations``.

    ``"constant"``: ``lr``; ``"cosine"``: ``lr / 2 x (1 + cos(pi step / iterations))`` (no restart, no warm-up);
    ``"step"``: the paper's step decay, ``lr`` divided by 10 at 1/2 and again at 3/4 of the budget.

    Example:
        >>> [round(scheduled_lr(s, lr=0.1, iterations=4, schedule="step"), 6) for s in range(4)]
        [0.1, 0.1, 0.01, 0.001]
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / iterations))
    if schedule == "step":
        return lr * 0.1 ** ((step >= iterations // 2) + (step >= (3 * iterations) // 4))
    raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode, running statistics) on ``x``, ``y``."""
    correct = 0
    with inference(model):
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)
