"""Operation counts and energy of one inference (paper appendix D, Table 6).

ANN count: the same architecture run as an ANN (one pass, no time axis) performs, in each conv / fc layer,
``output elements x fan-in`` multiply-accumulates (MACs), fan-in = ``in_channels / groups x kernel elements``
(``in_features`` for fc). Normalization, pooling and activations are not counted (the paper ignores them).

SNN count (the paper's convention, appendix D): an input spike to a synaptic layer triggers one addition per
synapse it drives, so a layer fed by spikes ``s`` performs ``sum_i s_i x fanout_i`` additions, measured on real
inputs over the T steps (``fanout_i`` = the outputs that input element ``i`` reaches, borders included). The
multiplications that remain:

- the encoding layer receives real values: its MACs at each of the T steps (for static images our model computes
  that conv once and repeats it, see ``SpikingNet``; the count follows the paper, which applies it at every step);
- the decoding layer: its MACs at each of the T steps;
- any other layer whose input is not binary (for instance an fc after average pooling of spikes, the fc-256 of
  ResNet-19): one MAC per non-zero input x fan-out (event-driven).

Counting the fc-256 of ResNet-19 as multiplications reproduces Table 6's 3.4e7 multiplications at T = 6
(encoding 2.1e7 + fc-256 1.3e7 + decoding 1.5e4).

NeuroBench's convention (``SynapticOperations`` / ``ActivationSparsity``, :func:`neurobench_ops`) counts what is
computed: every call of a conv / fc layer as it actually runs (the static encoding conv once per image, since the
model computes it once), one operation per (non-zero input, non-zero weight) pair that meets in a computed output
(so zero-padding taps are not operations), as additions (ACs) when every input of that call is 0/1 and as MACs
otherwise (the decoder fed by spikes is additions; an fc fed by pooled spikes is MACs); biases are not counted.
Activation sparsity is the fraction of zero outputs over every LIF neuron and step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .probes import forward_hooks, inference, io_layers, synaptic_layers

#: Energy per operation, 45 nm CMOS, 32-bit floating point: a MAC = multiply (3.7 pJ) + add (0.9 pJ).
E_MAC_PJ = 4.6
#: Energy per accumulate (one 32-bit floating-point addition), 45 nm CMOS.
E_AC_PJ = 0.9
ENERGY_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014: 45 nm CMOS, "
    "32-bit float add 0.9 pJ, multiply 3.7 pJ (MAC = 4.6 pJ)"
)


def fan_in(layer: nn.Module) -> int:
    """Inputs that one output element of a conv / linear layer sums (the MACs per output element)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    raise TypeError(f"expected nn.Conv1d/2d/3d or nn.Linear, got {type(layer).__name__}")


def dense_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of ``layer`` that produced ``output`` (any batch / time layout)."""
    return output.numel() * fan_in(layer)


@torch.no_grad()
def synaptic_events(layer: nn.Module, x: torch.Tensor) -> int:
    """``sum_i 1[x_i != 0] x fanout_i``: the synaptic operations that the non-zero inputs ``x`` of ``layer`` drive.

    For spikes this is the number of additions (each spike adds its weight to every output it reaches). Exact
    for any stride, padding, dilation and groups: a conv with all-ones weights counts, for each output element,
    the active inputs in its receptive field, and the sum over outputs equals the sum over inputs of their fan-out.

    Example:
        >>> fc = nn.Linear(3, 2)
        >>> synaptic_events(fc, torch.tensor([[1., 0., 1.]]))   # 2 spikes x 2 outputs
        4
    """
    active = (x != 0).to(torch.float64)
    if isinstance(layer, nn.Linear):
        return int(active.sum().item()) * layer.out_features
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise TypeError(f"expected nn.Conv1d/2d/3d or nn.Linear, got {type(layer).__name__}")
    if layer.groups == 1:  # every output channel sees all input channels: count once, times out_channels
        ones = torch.ones((1, 1, *layer.kernel_size), dtype=active.dtype, device=active.device)
        per_output = layer._conv_forward(active.sum(1, keepdim=True), ones, None)
        return int(round(per_output.sum().item())) * layer.out_channels
    ones = torch.ones(layer.weight.shape, dtype=active.dtype, device=active.device)
    return int(round(layer._conv_forward(active, ones, None).sum().item()))


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@dataclass(frozen=True)
class LayerOps:
    """Operations of one synaptic layer over the measured batch (totals, all images and steps).

    ``role`` is ``"encoding"``, ``"decoding"`` or ``"hidden"``; ``spike_input`` is True when every input the layer
    received was binary; ``ann_macs`` counts the layer's MACs per step, as in an ANN.
    """

    name: str
    role: str
    spike_input: bool
    additions: int
    multiplications: int
    ann_macs: int


@dataclass(frozen=True)
class OpCounts:
    """SNN operation counts of an inference over ``images`` inputs of ``timesteps`` steps (Table 6)."""

    layers: tuple[LayerOps, ...]
    images: int
    timesteps: int

    @property
    def additions(self) -> float:
        """Additions per image (all layers, all steps)."""
        return sum(layer.additions for layer in self.layers) / self.images

    @property
    def multiplications(self) -> float:
        """Multiplications per image (all layers, all steps)."""
        return sum(layer.multiplications for layer in self.layers) / self.images

    def energy_pj(self, *, ac_pj: float = E_AC_PJ, mac_pj: float = E_MAC_PJ) -> float:
        """Energy per image in pJ: additions x ``ac_pj`` + multiplications x ``mac_pj`` (see ``ENERGY_SOURCE``)."""
        return energy_pj(additions=self.additions, multiplications=self.multiplications, ac_pj=ac_pj, mac_pj=mac_pj)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "timesteps": self.timesteps,
            "additions_per_image": self.additions,
            "multiplications_per_image": self.multiplications,
            "energy_pj_per_image": self.energy_pj(),
            "layers": [asdict(layer) for layer in self.layers],
        }


def energy_pj(*, additions: float, multiplications: float, ac_pj: float = E_AC_PJ, mac_pj: float = E_MAC_PJ) -> float:
    """Energy estimate in pJ; defaults: 0.9 pJ per accumulate, 4.6 pJ per MAC (45 nm, ``ENERGY_SOURCE``).

    Example:
        >>> energy_pj(additions=10, multiplications=1)
        13.6
    """
    return additions * ac_pj + multiplications * mac_pj


def count_ops(
    model: nn.Module,
    x: torch.Tensor,
    *,
    images: int,
    encoding: nn.Module | None = None,
    decoding: nn.Module | None = None,
    encoding_repeats: int = 1,
    timesteps: int = 1,
) -> OpCounts:
    """Run ``model(x)`` once (eval mode, no gradients) and count every synaptic layer's operations.

    Args:
        model: any module; its ``nn.Conv1d/2d/3d`` and ``nn.Linear`` layers are counted.
        x: the input, as ``model`` takes it.
        images: how many images ``x`` holds (the counts are reported per image).
        encoding: the encoding layer (real-valued input: dense MACs, as multiplications).
        decoding: the decoding layer (dense MACs, as multiplications).
        encoding_repeats: how many steps one call of the encoding layer stands for (``T`` when a model computes
            the encoding conv of a static image once for all steps).
        timesteps: the number of steps of the inference, recorded in the result.
    """
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    layers = synaptic_layers(model)
    totals = {name: [0, 0, 0, True] for name, _ in layers}  # additions, multiplications, ann MACs, all binary

    def hook(name: str, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        acc = totals[name]
        macs = dense_macs(m, out)
        acc[2] += macs
        if m is encoding:
            acc[1] += macs * encoding_repeats
        elif m is decoding:
            acc[1] += macs
        elif _is_binary(inputs[0]):
            acc[0] += synaptic_events(m, inputs[0])
        else:
            acc[1] += synaptic_events(m, inputs[0])
            acc[3] = False

    with inference(model), forward_hooks(layers, hook):
        model(x)
    result = []
    for name, m in layers:
        add, mul, macs, binary = totals[name]
        role = "encoding" if m is encoding else "decoding" if m is decoding else "hidden"
        result.append(LayerOps(name, role, binary and role == "hidden", add, mul, macs))
    return OpCounts(tuple(result), images, timesteps)


def snn_ops(model: nn.Module, x: torch.Tensor) -> OpCounts:
    """SNN additions and multiplications of a :class:`~tdbn.models.SpikingNet` on real inputs ``x`` (Table 6).

    ``x``: static images ``[N, C, H, W]`` (encoding conv counted at each of ``model.timesteps`` steps) or event
    frames ``[T, N, C, H, W]``. To count the fully-spiking network of Eq. 9-10, pass ``tdbn.fuse(model)``: the
    tdBN of an identity shortcut then becomes a depthwise 1x1 conv whose additions are counted too.

    Example:
        >>> from tdbn.models import create
        >>> net = create("plain", num_classes=10, depth=6, width=0.0625, timesteps=2)
        >>> ops = snn_ops(net, torch.rand(2, 3, 16, 16))
        >>> ops.multiplications == 2 * 4 * 16 * 16 * 27 + 2 * 16 * 10   # encoding, decoding at T=2
        True
    """
    encoding, decoding = io_layers(model)
    static = x.dim() == 4
    T = int(getattr(model, "timesteps")) if static else int(x.shape[0])
    images = int(x.shape[0] if static else x.shape[1])
    return count_ops(
        model, x, images=images, encoding=encoding, decoding=decoding,
        encoding_repeats=T if static else 1, timesteps=T,
    )


def ann_macs_per_layer(model: nn.Module, x: torch.Tensor) -> list[tuple[str, int]]:
    """``(layer name, MACs)`` of every conv / fc layer for one forward of ``x`` (eval mode, no gradients).

    For the ANN count of one image pass one image with one time step, e.g. ``torch.zeros(1, 1, C, H, W)``
    (``[T=1, N=1, C, H, W]``) to a ``SpikingNet``; shortcut projections are included.
    """
    layers = synaptic_layers(model)
    macs = {name: 0 for name, _ in layers}

    def hook(name: str, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        macs[name] += dense_macs(m, out)

    with inference(model), forward_hooks(layers, hook):
        model(x)
    return list(macs.items())


def ann_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Total MACs of all conv / fc layers for one forward of ``x`` (see :func:`ann_macs_per_layer`).

    Example:
        >>> from tdbn.models import create
        >>> net = create("resnet19", num_classes=10)
        >>> round(ann_macs(net, torch.zeros(1, 1, 3, 32, 32)) / 1e9, 2)   # Table 6: 2.2e9
        2.29
    """
    return sum(m for _, m in ann_macs_per_layer(model, x))


@torch.no_grad()
def effective_ops(layer: nn.Module, x: torch.Tensor) -> int:
    """NeuroBench's effective synaptic operations of one call: (non-zero input, non-zero weight) pairs that meet.

    Example:
        >>> fc = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = fc.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
        >>> effective_ops(fc, torch.tensor([[0.5, 1.0, 1.0]]))   # input 0 meets 1 weight, input 2 meets 2
        3
    """
    active = (x != 0).to(torch.float64)
    mask = (layer.weight != 0).to(torch.float64)
    if isinstance(layer, nn.Linear):
        return int(round((active @ mask.T).sum().item()))
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise TypeError(f"expected nn.Conv1d/2d/3d or nn.Linear, got {type(layer).__name__}")
    return int(round(layer._conv_forward(active, mask, None).sum().item()))


@dataclass(frozen=True)
class NeuroBenchCounts:
    """Counts in NeuroBench's convention (module docstring), per image: effective MACs and ACs, and the
    activation sparsity of the LIF layers; ``layers`` maps each synaptic layer to ``(ACs, MACs)`` totals."""

    macs: float
    acs: float
    activation_sparsity: float
    images: int
    layers: dict[str, tuple[int, int]]

    def to_dict(self) -> dict:
        return {"convention": "NeuroBench SynapticOperations / ActivationSparsity: what is computed",
                "effective_macs_per_image": self.macs, "effective_acs_per_image": self.acs,
                "activation_sparsity": self.activation_sparsity, "images": self.images,
                "layers": {k: {"acs": a, "macs": m} for k, (a, m) in self.layers.items()}}


def neurobench_ops(model: nn.Module, x: torch.Tensor, *, images: int | None = None) -> NeuroBenchCounts:
    """Run ``model(x)`` once and count in NeuroBench's convention (module docstring).

    ``images`` defaults to the batch size of ``x`` (``[N, ...]`` static, ``[T, N, ...]`` frames of a
    ``SpikingNet``).
    """
    from ..layers.neuron import LIF

    layers = synaptic_layers(model)
    totals = {name: [0, 0] for name, _ in layers}  # ACs, MACs

    def hook(name: str, m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        totals[name][0 if _is_binary(inputs[0]) else 1] += effective_ops(m, inputs[0])

    spikes = [0, 0]  # non-zero, all

    def count(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        spikes[0] += int((out != 0).sum())
        spikes[1] += out.numel()

    lifs = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, LIF)]
    try:
        with inference(model), forward_hooks(layers, hook):
            model(x)
    finally:
        for h in lifs:
            h.remove()
    if images is None:
        images = int(x.shape[0] if x.dim() == 4 or not hasattr(model, "timesteps") else x.shape[1])
    acs = sum(a for a, _ in totals.values())
    macs = sum(m for _, m in totals.values())
    return NeuroBenchCounts(macs=macs / images, acs=acs / images,
                            activation_sparsity=1.0 - spikes[0] / max(spikes[1], 1), images=images,
                            layers={k: (a, m) for k, (a, m) in totals.items()})
