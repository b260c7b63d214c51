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
    after_backward: Callable[[nn.Module], None] | None = None,
) -> list[float]:
    """Train ``model`` for ``iterations`` mini-batches from ``data`` with softmax cross-entropy (Eq. 12-13).

    ``after_backward(model)`` runs after each backward pass, before the update (to read gradients). Stops early,
    returning the losses so far, when a loss is not finite (the run diverged).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    for _ in range(iterations):
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
    return losses


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode, running statistics) on ``x``, ``y``."""
    correct = 0
    with inference(model):
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)
