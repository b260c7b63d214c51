"""Networks of any depth for depth studies: a plain spiking net (Fig. 2) and its residual counterpart."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .net import SpikingNet, encoder
from .options import PLAIN_OPTIONS, SPIKING_OPTIONS, SpikingOptions, scaled, spiking_options, unit
from .registry import register
from .resnet import _stages, global_pool_net

_WIDTHS = (64, 128, 256)


def _split(n: int, parts: int) -> list[int]:
    """Split ``n`` layers over ``parts`` stages as evenly as possible, earlier stages first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _plain_body(opts: SpikingOptions, in_ch: int, widths: list[int], counts: list[int]) -> tuple[nn.Sequential, int]:
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    ch = in_ch
    for i, (w, n) in enumerate(zip(widths, counts)):
        layers = []
        for j in range(n):
            layers.append(unit(opts, ch, w, 3, stride=2 if (i > 0 and j == 0) else 1))
            ch = w
        stages[f"stage{i + 1}"] = nn.Sequential(*layers)
    return nn.Sequential(stages), ch


def _net(opts, body, ch, c1, num_classes, in_channels, timesteps) -> SpikingNet:
    return global_pool_net(opts, encoder(opts, in_channels, c1, 3, 1), body, ch, num_classes, in_channels, timesteps)


@register(PLAIN_OPTIONS)
def plain(
    *, num_classes: int = 10, in_channels: int = 3, depth: int = 20, width: float = 1.0, timesteps: int = 4,
    **options,
) -> SpikingNet:
    """Plain spiking net without shortcuts (Fig. 2 uses depth 20): encoding conv 3x3-64, ``depth - 2`` conv 3x3
    layers in three stages of 64, 128, 256 channels (stride 2 entering stages 2 and 3), global average pool,
    decoding fc. Every hidden layer is ``conv -> tdBN(alpha=1) -> LIF``."""
    if depth < 5:
        raise ValueError(f"plain depth must be >= 5 (encoding + 3 stages + decoding), got {depth}")
    opts = spiking_options(timesteps=timesteps, **options)
    widths = [scaled(w, width) for w in _WIDTHS]
    body, ch = _plain_body(opts, widths[0], widths, _split(depth - 2, 3))
    return _net(opts, body, ch, widths[0], num_classes, in_channels, timesteps)


@register(SPIKING_OPTIONS)
def resnet(
    *, num_classes: int = 10, in_channels: int = 3, depth: int = 20, width: float = 1.0, timesteps: int = 4,
    **options,
) -> SpikingNet:
    """Residual counterpart of :func:`plain` with the same widths: ``(depth - 2) / 2`` basic blocks (Fig. 5b) in
    three stages, so that plain and residual nets of one depth have the same number of weight layers."""
    if depth < 8 or (depth - 2) % 2:
        raise ValueError(f"resnet depth must be even and >= 8 (2 + 2 * blocks), got {depth}")
    opts = spiking_options(timesteps=timesteps, **options)
    widths = [scaled(w, width) for w in _WIDTHS]
    body, ch = _stages(opts, widths[0], widths, _split((depth - 2) // 2, 3), [False, True, True], bottleneck=False)
    return _net(opts, body, ch, widths[0], num_classes, in_channels, timesteps)
