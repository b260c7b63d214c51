"""Checks shared by the fusion and model tests: spikes and outputs of a network before and after ``tdbn.fuse``."""

from __future__ import annotations

import torch
from torch import nn

import tdbn
from tdbn import LIF, TdBatchNorm1d, TdBatchNorm2d
from tdbn.fusion import count_norm_layers


def record_spikes(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    spikes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: spikes.append(o)) for m in model.modules() if isinstance(m, LIF)]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return spikes, out


def record_membranes(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    us: list[torch.Tensor] = []

    def hook(m, inp, _o):
        us.append(m.forward_with_membrane(inp[0])[1])

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, LIF)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return us


def randomize_bn(model: nn.Module, steps: int, make_input) -> None:
    """Give every tdBN non-trivial affine parameters and running statistics."""
    for m in model.modules():
        if isinstance(m, (TdBatchNorm1d, TdBatchNorm2d)):
            with torch.no_grad():
                m.weight.uniform_(0.6, 1.6)
                m.bias.uniform_(-0.3, 0.3)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(make_input())
    model.eval()


def assert_fused_equal(model: nn.Module, x: torch.Tensor) -> None:
    fused = tdbn.fuse(model)
    assert count_norm_layers(fused) == 0
    s1, y1 = record_spikes(model, x)
    s2, y2 = record_spikes(fused, x)
    assert len(s1) == len(s2) > 0
    # spikes equal except where the potential lies within 1e-6 of the threshold (float rounding)
    us = record_membranes(model, x)
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    for a, b, u, lif in zip(s1, s2, us, lifs):
        near = (u - lif.v_th).abs() < 1e-6
        assert torch.equal(a[~near], b[~near])
        if not near.any():
            assert torch.equal(a, b)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-4)
