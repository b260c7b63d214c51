"""The paper's spiking residual networks (Fig. 5b, Table 4; docs/method.md section 5)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import TimeDistributed
from ..operators.spike_ops import pack_spikes
from ..operators.switches import lean_enabled
from ..layers.units import recompute_mode, recomputed_junction, residual_junction, synapse, unit_mode
from .net import SpikingNet, encoder, pool_head, spiking_fc
from .options import SPIKING_OPTIONS, SpikingOptions, conv_bn, scaled, spiking_options, unit
from .registry import register


def _shortcut(opts: SpikingOptions, in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Shortcut of a residual block: projection (1x1 conv, stride) + tdBN when the shape changes, otherwise
    identity, with a tdBN on it unless ``shortcut_norm="projection"``; alpha = residual_alpha."""
    if stride != 1 or in_ch != out_ch:
        return conv_bn(opts, in_ch, out_ch, 1, stride=stride, alpha=opts.residual_alpha)
    norm = opts.norm_layer(out_ch, alpha=opts.residual_alpha) if opts.shortcut_norm == "all" else None
    return nn.Sequential(OrderedDict(bn=norm)) if norm is not None else nn.Sequential()


class _ResidualBlock(nn.Module):
    """``lif(residual(x) + shortcut(x))`` for a block input ``x`` of spikes ``[T, N, C, H, W]``.

    ``residual`` is a sequence of :class:`~tdbn.layers.TdBNLIF` units ending with ``conv -> tdBN(1/sqrt 2)``.
    In training mode the forward pass calls the units by name: each ``conv -> tdBN -> LIF`` unit as one
    operator, and the junction ``LIF(tdBN(a) + tdBN(b))`` (or ``LIF(tdBN(a) + x)``) as another
    (:mod:`tdbn.operators.unit_ops`); the block input's bits are packed once and shared by the first conv and
    the shortcut. Everywhere else the modules run one after the other.
    """

    residual: nn.Sequential
    shortcut: nn.Sequential
    outputs_lif_spikes = True  # the output is the ``lif`` child's spikes (tdbn.layers.units.spike_sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *units, last = self.residual.children()
        norm_a = last._modules.get("bn")
        recompute = recompute_mode(self.lif, norm_a, self.shortcut._modules.get("bn"))
        if unit_mode(norm_a) or recompute:  # each unit and the junction check the rest themselves
            mask = pack_spikes(x)
            a, a_mask = x, mask
            for u in units:
                a = u(a, a_mask)
                a_mask = pack_spikes(a)
            za = synapse(last.conv, a, a_mask)
            out = residual_junction(za, norm_a, x, mask, self.shortcut, self.lif)
            if out is None and recompute:
                out = recomputed_junction(za, norm_a, x, mask, self.shortcut, self.lif)
            if out is not None:
                return out
            return self.lif(norm_a(za) + self.shortcut(x))
        return self.lif(self.residual(x) + self.shortcut(x))


class BasicBlock(_ResidualBlock):
    """Fig. 5(b): ``conv3x3 -> tdBN(1) -> LIF -> conv3x3 -> tdBN(1/sqrt 2)`` plus shortcut, added, then LIF."""

    def __init__(self, opts: SpikingOptions, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(
            OrderedDict(
                unit1=unit(opts, in_ch, out_ch, 3, stride=stride),
                unit2=conv_bn(opts, out_ch, out_ch, 3, alpha=opts.residual_alpha),
            )
        )
        self.shortcut = _shortcut(opts, in_ch, out_ch, stride)
        self.lif = opts.lif(out_ch)


class MembraneBlock(nn.Module):
    """A residual block on membrane potentials (``model.options.residual=membrane``; after MS-ResNet, Hu et al.):
    ``h + tdBN(conv(unit1(s)))`` with ``s = LIF(h)``, for a block input ``h`` of potentials ``[T, N, C, H, W]``.

    The stream ``h`` that runs through the blocks is never thresholded; every conv reads spikes (``s``, or the
    first unit's spikes). A block that changes the shape adds the projection ``tdBN(conv1x1(s))`` instead of
    ``h``; the identity adds ``h`` itself, with no normalization. Both summed tdBNs take ``residual_alpha``.

    When gradients are recorded (and :func:`tdbn.operators.lean_training` is on), every conv of the block runs as a
    conv over spikes that stores their bits, the block input's bits packed once for the first conv and the
    projection; the LIF on ``h`` stores ``u`` (at T = 1 with the rectangle surrogate, one bit per value:
    :func:`tdbn.operators.unit_ops.lif_op`).
    """

    def __init__(self, opts: SpikingOptions, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.lif = opts.lif(in_ch)
        self.residual = nn.Sequential(
            OrderedDict(
                unit1=unit(opts, in_ch, out_ch, 3, stride=stride),
                unit2=conv_bn(opts, out_ch, out_ch, 3, alpha=opts.residual_alpha),
            )
        )
        project = stride != 1 or in_ch != out_ch
        self.shortcut = conv_bn(opts, in_ch, out_ch, 1, stride=stride, alpha=opts.residual_alpha) if project \
            else nn.Sequential()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.lif(h)
        if not (torch.is_grad_enabled() and lean_enabled()):
            return self.residual(s) + (self.shortcut(s) if len(self.shortcut) else h)
        unit1, last = self.residual.children()
        mask = pack_spikes(s)
        a = unit1(s, mask)
        y = _conv_norm(last, a, pack_spikes(a))
        return y + (_conv_norm(self.shortcut, s, mask) if len(self.shortcut) else h)


def _conv_norm(seq: nn.Sequential, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``seq(x)`` of a ``conv -> [norm]`` over spikes ``x`` whose bits are ``mask``: the conv stores the bits."""
    y = synapse(seq.conv, x, mask)
    norm = seq._modules.get("bn")
    return norm(y) if norm is not None else y


class AnalogEncoder(nn.Sequential):
    """The encoding ``conv -> tdBN`` of a net with membrane residuals: its output is the first blocks' potential
    stream (the first block's LIF thresholds it), not spikes. Called like a unit (``synapse_done``: ``x`` is the
    conv's output already, a static image's, computed once and repeated over time)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, *,  # type: ignore[override]
                synapse_done: bool = False) -> torch.Tensor:
        return self.bn(x if synapse_done else self.conv(x))


RESIDUALS = ("spike", "membrane")


class Bottleneck(_ResidualBlock):
    """ResNet-50 block, same scheme: ``1x1 -> 3x3 (stride) -> 1x1 (x4)``, tdBN(1/sqrt 2) on the last, LIF after the sum."""

    expansion = 4

    def __init__(self, opts: SpikingOptions, in_ch: int, mid_ch: int, stride: int = 1):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.residual = nn.Sequential(
            OrderedDict(
                unit1=unit(opts, in_ch, mid_ch, 1),
                unit2=unit(opts, mid_ch, mid_ch, 3, stride=stride),
                unit3=conv_bn(opts, mid_ch, out_ch, 1, alpha=opts.residual_alpha),
            )
        )
        self.shortcut = _shortcut(opts, in_ch, out_ch, stride)
        self.lif = opts.lif(out_ch)


def _stages(
    opts: SpikingOptions, in_ch: int, widths: list[int], blocks: list[int], downsample: list[bool], bottleneck: bool,
    membrane: bool = False,
) -> tuple[nn.Sequential, int]:
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    ch = in_ch
    for i, (w, n, down) in enumerate(zip(widths, blocks, downsample)):
        layers = []
        for j in range(n):
            stride = 2 if (down and j == 0) else 1
            if bottleneck:
                layers.append(Bottleneck(opts, ch, w, stride))
                ch = w * Bottleneck.expansion
            else:
                layers.append((MembraneBlock if membrane else BasicBlock)(opts, ch, w, stride))
                ch = w
        stages[f"stage{i + 1}"] = nn.Sequential(*layers)
    return nn.Sequential(stages), ch


@dataclass(frozen=True)
class ResNetArgs:
    """One of the paper's residual networks (Table 4) as data: what :func:`_create_resnet` builds.

    ``conv1``: channels of the encoding conv, whose kernel is ``conv1_kernel`` (3, stride 1: the CIFAR-10 and DVS
    nets; 7, stride 2: the ImageNet nets); per stage, its ``widths``, its number of ``blocks`` and whether its
    first block halves the resolution (``downsample``); ``bottleneck`` blocks (ResNet-50) or basic ones; ``fc``:
    the spiking fc after an average pool /2 of the small nets (ResNet-17/19), or None for a global average pool
    straight into the decoding fc (ImageNet). Channel counts are the paper's, before the ``width`` multiplier.
    """

    conv1: int
    conv1_kernel: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    downsample: tuple[bool, ...]
    bottleneck: bool = False
    fc: int | None = None


RESNETS: dict[str, ResNetArgs] = {
    "resnet19": ResNetArgs(128, 3, (128, 256, 512), (3, 3, 2), (False, True, True), fc=256),
    "resnet17": ResNetArgs(64, 3, (64, 128), (3, 4), (True, True), fc=256),
    "resnet34": ResNetArgs(64, 7, (64, 128, 256, 512), (3, 4, 6, 3), (True,) * 4),
    "resnet34_large": ResNetArgs(128, 7, (128, 256, 512, 1024), (3, 4, 6, 3), (True,) * 4),
    "resnet50": ResNetArgs(64, 7, (64, 128, 256, 512), (3, 4, 6, 3), (True,) * 4, bottleneck=True),
}


def _create_resnet(name: str, *, num_classes: int, in_channels: int, width: float, timesteps: int,
                   input_size: int | None = None, residual: str = "spike", **options) -> SpikingNet:
    """The network :data:`RESNETS` ``[name]`` describes, at ``width``, with the neuron and normalization
    ``options``. The modules are made in one order for every net (stages, head, encoder, decoder), so that a seed
    gives the same initial weights as it always has.

    ``residual``: ``"spike"`` (the paper's blocks, :class:`BasicBlock` / :class:`Bottleneck`: spikes between
    blocks) or ``"membrane"`` (:class:`MembraneBlock`: potentials between blocks; the encoder
    :class:`AnalogEncoder` has no LIF, and the head starts with one).
    """
    arch = RESNETS[name]
    if residual not in RESIDUALS:
        raise ValueError(f"unknown residual {residual!r} for model {name!r}; valid: {list(RESIDUALS)}")
    membrane = residual == "membrane"
    if membrane and (arch.bottleneck or arch.fc is None):
        raise ValueError(f"residual='membrane' is built for resnet17 and resnet19 (basic blocks, an fc head); "
                         f"{name} has {'bottlenecks' if arch.bottleneck else 'a global pool'}: use residual='spike'")
    opts = spiking_options(timesteps=timesteps, **options)
    c1 = scaled(arch.conv1, width)
    ws = [scaled(w, width) for w in arch.widths]
    body, ch = _stages(opts, c1, ws, list(arch.blocks), list(arch.downsample), bottleneck=arch.bottleneck,
                       membrane=membrane)

    def enc(stride: int) -> nn.Module:
        if membrane:
            return AnalogEncoder(OrderedDict(conv_bn(opts, in_channels, c1, arch.conv1_kernel, stride=stride)._modules))
        return encoder(opts, in_channels, c1, arch.conv1_kernel, stride)

    if arch.fc is None:  # global average pool into the decoding fc
        return global_pool_net(opts, enc(2), body, ch, num_classes, in_channels, timesteps)
    assert input_size is not None
    size = input_size
    for down in arch.downsample:
        size = (size + 1) // 2 if down else size  # 3x3 conv, padding 1, stride 2
    size //= 2  # avg pool /2
    if size < 1:
        raise ValueError(f"input_size={input_size} is too small for this network "
                         f"(needs >= {2 ** (sum(arch.downsample) + 1)})")
    fc = scaled(arch.fc, width)
    layers = pool_head(nn.AvgPool2d(2))
    if membrane:  # the potentials of the last block fire before the pool
        layers = OrderedDict([("lif", opts.lif(ch)), *layers.items()])
    head = nn.Sequential(layers)
    head.add_module("fc", spiking_fc(opts, ch * size * size, fc))
    return SpikingNet(
        encoder=enc(1),
        body=body,
        head=head,
        decoder=TimeDistributed(nn.Linear(fc, num_classes)),
        in_channels=in_channels,
        timesteps=timesteps,
        options=opts,
    )


def global_pool_net(opts: SpikingOptions, enc: nn.Module, body: nn.Module, ch: int, num_classes: int,
                    in_channels: int, timesteps: int) -> SpikingNet:
    """``enc -> body -> global average pool -> decoding fc`` over ``ch`` channels (the ImageNet nets, the nets of
    any depth)."""
    return SpikingNet(
        encoder=enc,
        body=body,
        head=nn.Sequential(pool_head(nn.AdaptiveAvgPool2d(1))),
        decoder=TimeDistributed(nn.Linear(ch, num_classes)),
        in_channels=in_channels,
        timesteps=timesteps,
        options=opts,
    )


@register(SPIKING_OPTIONS)
def resnet19(
    *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, timesteps: int = 4, input_size: int = 32,
    residual: str = "spike", **options,
) -> SpikingNet:
    """ResNet-19 (CIFAR-10, CIFAR10-DVS): conv 3x3-128 s1; [128]x3, [256]x3*, [512]x2*; avg pool /2, fc-256, fc.

    ``residual="membrane"``: potentials between blocks (:class:`MembraneBlock`), not the paper's spikes."""
    return _create_resnet("resnet19", num_classes=num_classes, in_channels=in_channels, width=width,
                          timesteps=timesteps, input_size=input_size, residual=residual, **options)


@register(SPIKING_OPTIONS)
def resnet17(
    *, num_classes: int = 11, in_channels: int = 2, width: float = 1.0, timesteps: int = 40, input_size: int = 32,
    residual: str = "spike", **options,
) -> SpikingNet:
    """ResNet-17 (DVS128 Gesture): conv 3x3-64 s1; [64]x3*, [128]x4*; avg pool /2, fc-256, fc-11.

    ``residual="membrane"``: potentials between blocks (:class:`MembraneBlock`), not the paper's spikes."""
    return _create_resnet("resnet17", num_classes=num_classes, in_channels=in_channels, width=width,
                          timesteps=timesteps, input_size=input_size, residual=residual, **options)


@register(SPIKING_OPTIONS)
def resnet34(
    *, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, timesteps: int = 6, **options,
) -> SpikingNet:
    """ResNet-34 (ImageNet): conv 7x7-64 s2; [64]x3*, [128]x4*, [256]x6*, [512]x3*; avg pool, fc-1000."""
    return _create_resnet("resnet34", num_classes=num_classes, in_channels=in_channels, width=width,
                          timesteps=timesteps, **options)


@register(SPIKING_OPTIONS)
def resnet34_large(
    *, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, timesteps: int = 6, **options,
) -> SpikingNet:
    """ResNet-34 large (ImageNet): ResNet-34 with doubled widths: conv 7x7-128 s2; [128]x3*, ..., [1024]x3*."""
    return _create_resnet("resnet34_large", num_classes=num_classes, in_channels=in_channels, width=width,
                          timesteps=timesteps, **options)


@register(SPIKING_OPTIONS)
def resnet50(
    *, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, timesteps: int = 6, **options,
) -> SpikingNet:
    """ResNet-50 (ImageNet): conv 7x7-64 s2; bottlenecks [64,64,256]x3*, [128]x4*, [256]x6*, [512]x3*; fc-1000."""
    return _create_resnet("resnet50", num_classes=num_classes, in_channels=in_channels, width=width,
                          timesteps=timesteps, **options)
