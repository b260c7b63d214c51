"""The spiking unit ``[conv|fc] -> tdBN -> LIF`` as one module, and the helpers the residual blocks use.

:class:`TdBNLIF` keeps a readable module tree (an ``nn.Sequential`` of its synaptic layer, its
:class:`~tdbn.layers.TdBatchNorm2d` and its :class:`~tdbn.layers.LIF`, under the names ``conv``/``fc``, ``bn`` and
``lif``), so that ``tdbn.fuse``, the NIR/ONNX exporters, forward hooks and state dicts see the layers they know.
Its forward pass calls the unit operators of :mod:`tdbn.operators.unit_ops` when they apply, that is in training
mode with gradients recorded (:func:`unit_mode`), with process-local or synchronized statistics; in every other
case (evaluation, ``torch.no_grad``, a fused network whose ``bn`` became an ``Identity``, no normalization) it
runs its children one after the other, so hooks on the ``LIF`` child see every call there. A unit with one of tdBN's
successors (TEBN, BNTT, TAB, an MPBN neuron) is lean in training too (:func:`recompute_mode`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..operators import switches as _switches
from ..operators.spike_ops import pack_spikes, spike_conv2d
from ..operators.unit_ops import td_bn_add_lif, td_bn_lif
from .mpbn import MPBNLIF
from .neuron import LIF
from .norm import _TdBatchNorm
from .recompute import recomputed
from .temporal_norm import ChannelNorm, _TimeNorm, norm_lif
from .time import TimeDistributed

Tensor = torch.Tensor

def unit_mode(*norms: nn.Module | None) -> bool:
    """Whether the unit operators run for a unit with these norms: gradients are being recorded, the lean path is
    on (:func:`tdbn.operators.lean_training`), and every norm is a tdBN in training mode. Synchronized
    statistics (sync tdBN across processes) are reduced inside the operators (:class:`NormArgs.group`)."""
    if not torch.is_grad_enabled() or not _switches.lean_enabled():
        return False
    return all(isinstance(bn, _TdBatchNorm) and bn.training for bn in norms)


def recompute_mode(lif: LIF, *norms: nn.Module | None) -> bool:
    """Whether a unit with a successor normalization (TEBN, BNTT, TAB) or an MPBN neuron runs lean (one autograd
    node, :func:`tdbn.layers.temporal_norm.norm_lif`, where :func:`_lean_norm` says it applies; otherwise its modules
    recomputed in backward, :mod:`tdbn.layers.recompute`): gradients are being recorded, the lean path is on, and one
    of its modules normalizes with batch statistics (training mode). Under ``torch.compile`` the modules run one
    after the other and the compiler's partitioner decides what is stored."""
    if not torch.is_grad_enabled() or not _switches.lean_enabled() or torch.compiler.is_compiling():
        return False  # compiling: the one-node units call autograd inside their backward, which dynamo cannot trace
    successors = [m for m in (lif, *norms) if isinstance(m, (_TimeNorm, MPBNLIF))]
    return bool(successors) and any(m.training for m in (lif, *norms) if m is not None)


def _op_neuron(lif: LIF) -> bool:
    """The unit operators integrate the plain LIF of Eq. 1-3 (an MPBN neuron normalizes before firing)."""
    return type(lif) is LIF or not isinstance(lif, MPBNLIF)


def synapse(layer: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """``layer(x)`` for a :class:`TimeDistributed` conv or fc; a conv over spikes (``mask`` given) runs as
    :func:`tdbn.operators.unit_ops.spike_conv2d`, which stores the mask instead of ``x``."""
    inner = layer.module if isinstance(layer, TimeDistributed) else None
    if mask is None or not isinstance(inner, nn.Conv2d) or x.dim() != 5 or inner.padding_mode != "zeros" \
            or isinstance(inner.padding, str):
        return layer(x)
    T, N = x.shape[:2]
    y = spike_conv2d(inner, x.flatten(0, 1), mask)  # the bits of x are those of x.flatten(0, 1)
    return y.view(T, N, *y.shape[1:])


class TdBNLIF(nn.Sequential):
    """A spiking unit: an optional synaptic layer (``conv`` or ``fc``, :class:`TimeDistributed`), an optional norm
    (``bn``) and a :class:`LIF` (``lif``), in this order; input and output ``[T, N, ...]``.

    In training mode with gradients recorded and a tdBN as norm, the unit is one operator
    (:func:`tdbn.operators.unit_ops.td_bn_lif`): it stores the synaptic layer's output and the per-channel
    statistics, not the membrane potentials. With ``spikes_in=True`` the unit's input holds only 0/1 (it is a
    LIF's output) and a conv stores its bits for the weight gradient.

    Example:
        >>> unit = TdBNLIF(tdbn.TdBatchNorm1d(3), tdbn.LIF())           # tdBN -> LIF on [T, N, F]
        >>> unit(torch.randn(4, 2, 3)).shape
        torch.Size([4, 2, 3])
        >>> [name for name, _ in unit.named_children()]
        ['bn', 'lif']
    """

    outputs_lif_spikes = True  # the output is the ``lif`` child's spikes (see spike_sources)

    def __init__(self, *layers: nn.Module, spikes_in: bool = False):
        named: OrderedDict[str, nn.Module] = OrderedDict()
        for layer in layers:
            if isinstance(layer, LIF):
                named["lif"] = layer
            elif isinstance(layer, (_TdBatchNorm, _TimeNorm, nn.modules.batchnorm._BatchNorm)):
                named["bn"] = layer
            elif isinstance(layer, TimeDistributed) and isinstance(layer.module, nn.Linear):
                named["fc"] = layer
            else:
                named["conv"] = layer
        if list(named)[-1:] != ["lif"] or len(named) != len(layers):
            raise ValueError("TdBNLIF takes [conv | fc], [bn], and a LIF last, each at most once; got "
                             f"{[type(m).__name__ for m in layers]}")
        super().__init__(named)
        self.spikes_in = bool(spikes_in)

    def _synapse_layer(self) -> nn.Module | None:
        return self._modules.get("conv", self._modules.get("fc"))

    def forward(self, x: Tensor, mask: Tensor | None = None, *, synapse_done: bool = False) -> Tensor:  # type: ignore[override]
        """``x``: the unit's input; ``mask``: its bits (:func:`~tdbn.operators.unit_ops.pack_spikes`) if the caller
        has them (spike input);
        ``synapse_done``: ``x`` is already the synaptic layer's output (a static image's encoding conv, run once
        and repeated over time)."""
        syn = None if synapse_done else self._synapse_layer()
        path = self._path()
        if syn is not None:
            if path != "modules" and self.spikes_in and mask is None:
                mask = pack_spikes(x)
            x = synapse(syn, x, mask if path != "modules" else None)
        return self.activate(x, path=path)

    def _path(self) -> str:
        """``"operator"`` (the tdBN unit operator), ``"recompute"`` (a successor's unit: one autograd node, or its
        modules recomputed in backward) or ``"modules"`` (one after the other)."""
        bn = self._modules.get("bn")
        if _op_neuron(self.lif) and unit_mode(bn):
            return "operator"
        return "recompute" if recompute_mode(self.lif, bn) else "modules"

    def activate(self, z: Tensor, *, path: str | None = None) -> Tensor:
        """The unit after its synaptic layer: ``LIF(bn(z))``, as one operator or recomputed where it applies."""
        path = path or self._path()
        if path == "operator":
            return td_bn_lif(z, self.bn.unit_args(z), self.lif.params)
        if path == "recompute":
            bn = self._modules.get("bn")
            lean = _lean_norm(bn, self.lif)
            if lean is not None:  # one node: z and the per-step sums stored
                return norm_lif(z, None, lean, None, self.lif)
            return recomputed(self._norm_lif, z, params=_parameters(bn, self.lif))
        return self._norm_lif(z)

    def _norm_lif(self, z: Tensor) -> Tensor:
        bn = self._modules.get("bn")
        return self.lif(bn(z) if bn is not None else z)

    def extra_repr(self) -> str:
        return "spikes_in=True" if self.spikes_in else ""


def spike_sources(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the spikes of every LIF of ``model``, each LIF once: a LIF that is the
    ``lif`` child of a unit (:class:`TdBNLIF`, a residual block) is represented by that unit, whose forward
    returns its spikes in every mode (in training the unit's operator, not the ``LIF`` child, computes them).
    Forward hooks on these modules see all spikes, in training and in evaluation."""
    out = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, LIF):
                owns = name == "lif" and getattr(parent, "outputs_lif_spikes", False)
                out.append(parent if owns else child)
    if isinstance(model, LIF):
        out.append(model)
    return out


def residual_junction(za: Tensor, norm_a: nn.Module, x: Tensor, x_mask: Tensor, shortcut: nn.Sequential,
                      lif: LIF) -> Tensor | None:
    """``lif(norm_a(za) + shortcut(x))`` of a residual block (Fig. 5b) as one operator, for a block input ``x``
    of spikes (bits ``x_mask``) and a shortcut that is a projection ``conv -> bn``, a lone ``bn`` or empty
    (identity). Returns None when the operators do not apply (then the block runs its modules)."""
    conv, norm_b = shortcut._modules.get("conv"), shortcut._modules.get("bn")
    if len(shortcut) != (conv is not None) + (norm_b is not None):
        return None  # a shortcut of other layers
    if not (_op_neuron(lif) and unit_mode(norm_a) and (norm_b is None or unit_mode(norm_b))):
        return None
    if conv is not None:
        if norm_b is None:
            return None
        zb, zb_mask = synapse(conv, x, x_mask), None
    else:
        zb, zb_mask = x, x_mask
    args_b = norm_b.unit_args(zb) if norm_b is not None else None
    return td_bn_add_lif(za, norm_a.unit_args(za), zb, args_b, lif.params, zb_mask=zb_mask)


def recomputed_junction(za: Tensor, norm_a: nn.Module, x: Tensor, x_mask: Tensor, shortcut: nn.Sequential,
                        lif: LIF) -> Tensor | None:
    """``lif(norm_a(za) + shortcut(x))`` for a successor normalization or an MPBN neuron: one autograd node
    (:func:`tdbn.layers.temporal_norm.norm_lif`) where :func:`_lean_norm` says it applies, otherwise recomputed in
    backward (:mod:`tdbn.layers.recompute`); either stores ``za`` and the shortcut's conv output, or the block
    input's bits for an identity shortcut, as the junction operator does. None for a shortcut of other layers."""
    conv, norm_b = shortcut._modules.get("conv"), shortcut._modules.get("bn")
    if len(shortcut) != (conv is not None) + (norm_b is not None):
        return None

    lean_a = _lean_norm(norm_a, lif)
    lean_b = _lean_norm(norm_b, lif) if norm_b is not None else None
    if lean_a is not None and (norm_b is None or lean_b is not None):  # one node: za, zb (or its bits), the sums
        zb = synapse(conv, x, x_mask) if conv is not None else x
        return norm_lif(za, zb, lean_a, lean_b, lif, spikes_b=conv is None)

    def junction(za: Tensor, zb: Tensor) -> Tensor:
        return lif(norm_a(za) + (norm_b(zb) if norm_b is not None else zb))

    zb = synapse(conv, x, x_mask) if conv is not None else x
    return recomputed(junction, za, zb, params=_parameters(norm_a, norm_b, lif),
                      spike_args=() if conv is not None else (1,))


def _lean_norm(norm: nn.Module | None, lif: LIF):
    """The normalization as the one-node lean unit (:func:`tdbn.layers.temporal_norm.norm_lif`) takes it, or None
    where that unit does not apply: TEBN, BNTT or TAB before a plain LIF, or a BN before an MPBN neuron
    (:class:`~tdbn.layers.temporal_norm.ChannelNorm`), all in training."""
    if norm is None or not norm.training:
        return None
    if isinstance(norm, _TimeNorm) and _op_neuron(lif):
        return norm
    if isinstance(norm, _TdBatchNorm) and isinstance(lif, MPBNLIF) and lif.training:
        return ChannelNorm(norm)
    return None


def _parameters(*modules: nn.Module | None) -> list[Tensor]:
    return [p for m in modules if m is not None for p in m.parameters()]
