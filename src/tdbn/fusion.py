"""BN-scale fusion (paper Eq. 9-10): turn a trained network into conv/fc + LIF only.

``fuse(model)`` returns an eval-mode copy in which

- every tdBN that directly follows a conv or linear layer (inside an ``nn.Sequential``, possibly wrapped in
  ``TimeDistributed``) is folded into that layer's weights and bias and replaced by ``nn.Identity``;
- every other tdBN (for instance the tdBN on an identity shortcut of a residual block, docs/method.md) is
  replaced by the equivalent synaptic layer: a depthwise 1x1 convolution (2-d) or a diagonal linear layer
  (1-d) holding its per-channel scale and shift.

No normalization module remains, so the network is "full-spiking" (paper section 3): every neuron receives a
weighted sum of spikes plus a bias.

tdBN's successors (docs/export.md, "What each normalization leaves"): an MPBN neuron's per-channel threshold is
moved into its inputs (the channel's incoming BN scaled by ``v_th / theta``, where ``theta > 0`` and the BN's
``gamma > 0``), leaving a plain LIF; TEBN, BNTT and TAB fold where their evaluation-mode map is the same at every
step, and are refused otherwise (a per-step affine is no static network), with the reason and the alternative.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .functional.fold import bn_scale_shift, fold_into
from .layers.affine import ChannelAffine2d
from .layers.mpbn import MPBNLIF
from .layers.neuron import LIF
from .layers.norm import TdBatchNorm1d, TdBatchNorm2d, _TdBatchNorm
from .layers.temporal_norm import _TimeNorm
from .layers.time import TimeDistributed

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _inner(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, TimeDistributed) else m


class FusionError(ValueError):
    """A network (part) that folds into no static conv/fc + LIF network; the message names it, why and what to do."""


_ALTERNATIVE = ("evaluate or stream the network unfused as trained (tdbn eval, tdbn stream), or train with "
                "norm=tdbn, bn or mpbn for a fully spiking network (NIR export, --bits)")


def _scale_shift(bn: nn.Module, name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``(scale, shift)`` of a normalization in evaluation mode; a TEBN, BNTT or TAB only where its
    map is the same at every step."""
    if isinstance(bn, _TimeNorm):
        scale, shift = bn.step_affine()
        if not (torch.equal(scale, scale[:1].expand_as(scale)) and torch.equal(shift, shift[:1].expand_as(shift))):
            why = ("its learned per-step scale p differs between steps" if hasattr(bn, "p")
                   and not torch.equal(bn.p, bn.p[:1].expand_as(bn.p)) else
                   "its per-step statistics and affine differ between steps")
            raise FusionError(f"tdbn.fuse: {name or 'a normalization'} ({type(bn).__name__}) leaves a different "
                              f"affine map at each time step ({why}): no static network; {_ALTERNATIVE}")
        return scale[0], shift[0]
    return bn_scale_shift(
        bn.running_mean, bn.running_var, bn.weight, bn.bias, alpha=bn.alpha, v_th=bn.v_th, eps=bn.eps
    )


_NORMS = (_TdBatchNorm, _TimeNorm)


@torch.no_grad()
def _move_mpbn_thresholds(model: nn.Module) -> int:
    """Replace every MPBN neuron by a plain LIF, scaling the BN(s) feeding it by ``v_th / theta`` per channel."""
    moved = 0
    for name, module in model.named_modules():
        lif = module._modules.get("lif")
        if not isinstance(lif, MPBNLIF):
            continue
        if hasattr(module, "residual") and hasattr(module, "shortcut"):  # a residual block's junction neuron
            norms = [list(module.residual.children())[-1]._modules.get("bn"), module.shortcut._modules.get("bn")]
        else:
            norms = [module._modules.get("bn")]
        where = f"{name}.lif" if name else "lif"
        if any(not isinstance(n, _TdBatchNorm) for n in norms):
            raise FusionError(f"tdbn.fuse: the MPBN neuron {where} has an input without a per-channel BN (e.g. an "
                              f"identity shortcut without norm): its threshold cannot be moved into the weights; "
                              f"build the model with shortcut_norm='all', or {_ALTERNATIVE}")
        theta = lif.threshold()
        bad = int(((lif.weight <= 0) | ~(theta > 0)).sum())
        if bad:
            raise FusionError(f"tdbn.fuse: the MPBN neuron {where} has {bad} channel(s) whose threshold on the "
                              f"membrane potential is not positive or whose gamma <= 0: a plain LIF with the common "
                              f"threshold v_th cannot stand for them (it would need a negative input scale); "
                              f"{_ALTERNATIVE}")
        k = lif.v_th / theta
        for bn in norms:
            bn.weight.mul_(k.to(bn.weight.dtype))
            bn.bias.mul_(k.to(bn.bias.dtype))
        module._modules["lif"] = LIF(lif.params)
        moved += 1
    left = [n for n, m in model.named_modules() if isinstance(m, MPBNLIF)]
    if left:
        raise FusionError(f"tdbn.fuse: the MPBN neuron(s) {left} are not the neuron of a unit or a residual block, "
                          f"so no BN in front of them takes their threshold; {_ALTERNATIVE}")
    return moved


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module, name: str = "") -> None:
    if layer.weight.shape[0] != bn.num_features:
        raise ValueError(
            f"cannot fold {bn} into {layer}: {layer.weight.shape[0]} output channels vs {bn.num_features} features"
        )
    scale, shift = _scale_shift(bn, name)
    w, b = fold_into(layer.weight, layer.bias, scale, shift)
    layer.weight.copy_(w)
    if layer.bias is None:
        layer.bias = nn.Parameter(b.to(layer.weight.dtype))
    else:
        layer.bias.copy_(b)


@torch.no_grad()
def _affine_layer(bn: nn.Module, name: str = "", two_d: bool | None = None) -> nn.Module:
    """The synaptic layer equal to ``bn`` in eval mode: depthwise 1x1 conv or diagonal linear.

    The 2d case is a :class:`ChannelAffine2d`: a depthwise 1x1 ``nn.Conv2d`` (so exporters see an ordinary
    convolution) computed as a broadcast multiply-add, which is far faster than a grouped convolution on the CPU.
    """
    scale, shift = _scale_shift(bn, name)
    C = bn.num_features
    if isinstance(bn, TdBatchNorm2d) or two_d:
        layer = ChannelAffine2d(C)
        layer.weight.copy_(scale.view(C, 1, 1, 1))
    elif isinstance(bn, TdBatchNorm1d) or two_d is False:
        layer = nn.Linear(C, C, bias=True)
        layer.weight.copy_(torch.diag(scale))
    else:  # pragma: no cover - only the two tdBN kinds exist
        raise TypeError(f"unsupported normalization layer {type(bn).__name__}")
    layer.bias.copy_(shift)
    return TimeDistributed(layer.to(bn.running_mean.device, bn.running_mean.dtype))


def _fold_sequentials(model: nn.Module) -> int:
    folded = 0
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev_name, name in zip(names, names[1:]):
            prev, cur = seq._modules[prev_name], seq._modules[name]
            if isinstance(cur, _NORMS) and isinstance(_inner(prev), _FOLDABLE):
                _fold_pair(_inner(prev), cur, f"{seq_name}.{name}" if seq_name else name)
                seq._modules[name] = nn.Identity()
                folded += 1
    return folded


def _replace_remaining(module: nn.Module, prefix: str = "") -> int:
    replaced = 0
    for name, child in list(module._modules.items()):
        if isinstance(child, _NORMS):
            two_d = None if isinstance(child, _TdBatchNorm) else child.dims == 2
            module._modules[name] = _affine_layer(child, prefix + name, two_d)
            replaced += 1
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise TypeError(
                f"fuse: {name} is a plain {type(child).__name__}; tdbn.fuse folds tdBN layers only "
                "(TdBatchNorm1d / TdBatchNorm2d)"
            )
        elif child is not None:
            replaced += _replace_remaining(child, f"{prefix}{name}.")
    return replaced



def fuse(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every tdBN folded away (Eq. 9-10).

    The original model is left untouched. Raises ``ValueError`` if ``model`` is in training mode: fusion uses
    the running statistics, which only eval mode uses too.

    Example:
        >>> from tdbn.layers import TdBatchNorm2d, LIF
        >>> net = nn.Sequential(TimeDistributed(nn.Conv2d(2, 4, 3)), TdBatchNorm2d(4), LIF()).eval()
        >>> fused = fuse(net)
        >>> [type(m).__name__ for m in fused]
        ['TimeDistributed', 'Identity', 'LIF']
    """
    if model.training:
        raise ValueError("fuse() needs a model in eval mode (it folds the running statistics): call model.eval()")
    fused = copy.deepcopy(model)
    _move_mpbn_thresholds(fused)
    _fold_sequentials(fused)
    _replace_remaining(fused)
    fused.eval()
    return fused


def count_norm_layers(model: nn.Module) -> int:
    """Number of normalization modules (tdBN or torch BN) left in ``model``."""
    return sum(isinstance(m, (*_NORMS, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
