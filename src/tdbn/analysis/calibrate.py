"""Set the normalization statistics of an untrained network from data, so that eval-mode probes are meaningful.

A freshly built network in eval mode normalizes with the initial running statistics (mean 0, variance 1), not
with the statistics of its pre-activations, so its spikes say little about the design point of tdBN (each LIF
input ~ N(0, (alpha v_th)^2), Eq. 5). Calibrating sets every tdBN's running mean and variance to those of one
batch, as training would on average. Trained checkpoints need no calibration.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.norm import _TdBatchNorm


def calibrate_norm_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Replace every tdBN's running statistics by those of ``model(x)`` (one train-mode forward, no gradients).

    Modifies ``model`` in place (running statistics only; weights untouched) and returns it, with every module's
    training flag and every tdBN's momentum restored.

    Example:
        >>> from tdbn.models import create
        >>> net = create("plain", num_classes=10, depth=6, width=0.0625).eval()
        >>> _ = calibrate_norm_stats(net, torch.randn(8, 3, 16, 16) * 5)
        >>> float(net.encoder.bn.running_var.mean()) > 2.0   # was 1.0
        True
    """
    norms = [m for m in model.modules() if isinstance(m, _TdBatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no tdBN layer to calibrate")
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 1.0  # running <- this batch's statistics
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes:
            m.training = training
    return model
