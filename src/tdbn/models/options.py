"""Neuron and normalization hyper-parameters shared by all models, and the layer factories that use them."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, fields

from torch import nn

from ..functional.params import DEFAULT_LIF, LIFParameters
from ..layers import LIF, MPBNLIF, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF, TimeDistributed
from ..layers.temporal_norm import NORM_SPECS, TIME_NORM_CLASSES

#: a normalization of the membrane potential (in the neuron) and the normalization of the synaptic layers under it
_NEURON_NORMS = {"mpbn": "bn"}
#: the normalizations every network takes (docs/method.md): the paper's tdBN, plain BN, its successors (each a
#: :class:`~tdbn.layers.temporal_norm.NormSpec`), MPBN, or none
NORMS = (*NORM_SPECS, *_NEURON_NORMS, "none")
SHORTCUT_NORMS = ("all", "projection")


@dataclass(frozen=True)
class SpikingOptions:
    """Hyper-parameters of the neurons (Eq. 1-3, 16) and of tdBN (Eq. 5-8).

    Attributes:
        neuron: the LIF parameters of every neuron (:class:`~tdbn.functional.params.LIFParameters`: tau, v_th,
            surrogate and its width; defaults in :data:`~tdbn.functional.params.DEFAULT_LIF`).
        norm: ``"tdbn"`` (paper), ``"bn"`` (standard BN: the alpha*v_th scale removed, i.e. scale 1), one of
            tdBN's successors (docs/method.md): ``"tebn"``, ``"bntt"``, ``"tab"`` (normalizations with per-step
            parameters, in place of every tdBN), ``"mpbn"`` (standard BN after each synaptic layer and a batch norm
            on every neuron's membrane potential, :class:`~tdbn.layers.MPBNLIF`), or ``"none"`` (no normalization;
            convs get a bias). ``residual_alpha`` applies to tdBN alone.
        timesteps: T, which the normalizations with per-step parameters are built for (the builders set it).
        residual_alpha: alpha of the tdBNs whose outputs are summed in a residual block (paper: 1/sqrt(2)).
        shortcut_norm: ``"all"`` puts a tdBN on every shortcut, identity included (default, the paper's variance
            argument); ``"projection"`` only on projection shortcuts (what many re-implementations do).
    """

    neuron: LIFParameters = DEFAULT_LIF
    norm: str = "tdbn"
    residual_alpha: float = 1.0 / math.sqrt(2.0)
    shortcut_norm: str = "all"
    timesteps: int = 1

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {list(NORMS)}")
        if self.shortcut_norm not in SHORTCUT_NORMS:
            raise ValueError(f"unknown shortcut_norm {self.shortcut_norm!r}; valid: {list(SHORTCUT_NORMS)}")
        if not isinstance(self.neuron, LIFParameters):
            raise TypeError(f"neuron must be a LIFParameters, got {type(self.neuron).__name__}")

    @property
    def v_th(self) -> float:
        return self.neuron.v_th

    def lif(self, channels: int) -> LIF:
        """The neurons of a layer of ``channels`` channels (features)."""
        return MPBNLIF(channels, self.neuron) if self.norm == "mpbn" else LIF(self.neuron)

    def norm_layer(self, channels: int, *, alpha: float = 1.0, dims: int = 2) -> nn.Module | None:
        if self.norm == "none":
            return None
        spec = NORM_SPECS[_NEURON_NORMS.get(self.norm, self.norm)]
        if spec.per_step:
            return TIME_NORM_CLASSES[spec.name](channels, self.timesteps, dims=dims)
        cls = TdBatchNorm2d if dims == 2 else TdBatchNorm1d
        if spec.threshold:  # tdBN: alpha * v_th
            return cls(channels, alpha=alpha, v_th=self.v_th)
        return cls(channels, alpha=1.0, v_th=1.0)  # standard BN: normalized to unit variance


#: the neuron options of every network (the fields of :class:`LIFParameters`)
NEURON_OPTIONS = tuple(f.name for f in fields(LIFParameters))
#: the options every network takes, neuron and normalization, by name (keyword arguments of every builder)
SPIKING_OPTIONS = NEURON_OPTIONS + ("norm", "residual_alpha", "shortcut_norm")
#: the options of a network without residual blocks
PLAIN_OPTIONS = NEURON_OPTIONS + ("norm",)


def spiking_options(*, timesteps: int = 1, **options) -> SpikingOptions:
    """The :class:`SpikingOptions` of a network from its keyword options (``tau``, ``v_th``, ``surrogate``,
    ``surrogate_width``, ``norm``, ``residual_alpha``, ``shortcut_norm``); each one not given takes its default,
    defined once (:data:`~tdbn.functional.params.DEFAULT_LIF` and the fields of :class:`SpikingOptions`).

    Example:
        >>> spiking_options(v_th=1.0, norm="bn").neuron.v_th
        1.0
    """
    unknown = sorted(set(options) - set(SPIKING_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; valid: {sorted(SPIKING_OPTIONS)}")
    neuron = LIFParameters(**{k: options.pop(k) for k in NEURON_OPTIONS if k in options})
    return SpikingOptions(neuron=neuron, timesteps=int(timesteps), **options)


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def conv_bn(
    opts: SpikingOptions,
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    *,
    stride: int = 1,
    alpha: float = 1.0,
) -> nn.Sequential:
    """``conv -> tdBN`` as an ``nn.Sequential(conv=..., bn=...)``, the unit that ``tdbn.fuse`` folds."""
    norm = opts.norm_layer(out_ch, alpha=alpha)
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=norm is None)
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=TimeDistributed(conv))
    if norm is not None:
        layers["bn"] = norm
    return nn.Sequential(layers)


def unit(
    opts: SpikingOptions, in_ch: int, out_ch: int, kernel_size: int, *, stride: int = 1, spikes_in: bool = True
) -> TdBNLIF:
    """``conv -> tdBN -> LIF`` as one :class:`~tdbn.layers.TdBNLIF` (children ``conv``, ``bn``, ``lif``);
    ``spikes_in``: its input is a LIF's output (every conv but the encoding one)."""
    seq = conv_bn(opts, in_ch, out_ch, kernel_size, stride=stride)
    return TdBNLIF(*seq.children(), opts.lif(out_ch), spikes_in=spikes_in)


def linear_bn(opts: SpikingOptions, in_f: int, out_f: int, *, alpha: float = 1.0) -> nn.Sequential:
    norm = opts.norm_layer(out_f, alpha=alpha, dims=1)
    layers: OrderedDict[str, nn.Module] = OrderedDict(fc=TimeDistributed(nn.Linear(in_f, out_f, bias=norm is None)))
    if norm is not None:
        layers["bn"] = norm
    return nn.Sequential(layers)
