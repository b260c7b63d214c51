"""Tiny registered models in eval mode with non-trivial tdBN parameters and running statistics, for equivalence
tests (streaming == multi-step, NIR round trip, fusion)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import tdbn


def tiny_model(name: str, *, in_channels: int, timesteps: int, size: int, weight: tuple[float, float],
               bias: tuple[float, float], warm_input: Callable[[], torch.Tensor], **builder) -> nn.Module:
    """``tdbn.models.create(name, **builder)`` at width 1/16 (depth 8 where the model has one), tdBN weights and
    biases drawn from the given ranges, running statistics set by two training-mode passes over ``warm_input()``."""
    options = {"num_classes": 5, "in_channels": in_channels, "width": 1 / 16, "timesteps": timesteps, **builder}
    if "input_size" in tdbn.models.options_of(name):
        options["input_size"] = size
    if "depth" in tdbn.models.options_of(name):
        options["depth"] = 8
    model = tdbn.models.create(name, **options)
    for m in model.modules():
        if isinstance(m, (tdbn.TdBatchNorm1d, tdbn.TdBatchNorm2d)):
            with torch.no_grad():
                m.weight.uniform_(*weight)
                m.bias.uniform_(*bias)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(warm_input())
    return model.eval()
