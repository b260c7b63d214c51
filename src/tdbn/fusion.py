"""BN-scale fusion (paper Eq. 9-10): turn a trained network into conv/fc + LIF only.

``fuse(model)`` returns an eval-mode copy in which

- every tdBN that directly follows a conv or linear layer (inside an ``nn.Sequential``, possibly wrapped in
  ``TimeDistributed``) is folded into that layer's weights and bias and replaced by ``nn.Identity``;
- every other tdBN (for instance the tdBN on an identity shortcut of a residual block, docs/method.md) is
  replaced by the equivalent synaptic layer: a depthwise 1x1 convolution (2-d) or a diagonal linear layer
  (1-d) holding its per-channel scale and shift.

No normalization module remains, so the network is "full-spiking" (paper section 3): every neuron receives a
weighted sum of spikes plus a bias.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .functional.fold import bn_scale_shift, fold_into
from .layers.affine import ChannelAffine2d
from .layers.norm import TdBatchNorm1d, TdBatchNorm2d, _TdBatchNorm
from .layers.time import TimeDistributed

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _inner(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, TimeDistributed) else m


def _scale_shift(bn: _TdBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return bn_scale_shift(
        bn.running_mean, bn.running_var, bn.weight, bn.bias, alpha=bn.alpha, v_th=bn.v_th, eps=bn.eps
    )


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: _TdBatchNorm) -> None:
    if layer.weight.shape[0] != bn.num_features:
        raise ValueError(
            f"cannot fold {bn} into {layer}: {layer.weight.shape[0]} output channels vs {bn.num_features} features"
        )
    scale, shift = _scale_shift(bn)
    w, b = fold_into(layer.weight, layer.bias, scale, shift)
    layer.weight.copy_(w)
    if layer.bias is None:
        layer.bias = nn.Parameter(b.to(layer.weight.dtype))
    else:
        layer.bias.copy_(b)


@torch.no_grad()
def _affine_layer(bn: _TdBatchNorm) -> nn.Module:
    """The synaptic layer equal to ``bn`` in eval mode: depthwise 1x1 conv or diagonal linear.

    The 2d case is a :class:`ChannelAffine2d`: a depthwise 1x1 ``nn.Conv2d`` (so exporters see an ordinary
    convolution) computed as a broadcast multiply-add, which is far faster than a grouped convolution on the CPU.
    """
    scale, shift = _scale_shift(bn)
    C = bn.num_features
    if isinstance(bn, TdBatchNorm2d):
        layer = ChannelAffine2d(C)
        layer.weight.copy_(scale.view(C, 1, 1, 1))
    elif isinstance(bn, TdBatchNorm1d):
        layer = nn.Linear(C, C, bias=True)
        layer.weight.copy_(torch.diag(scale))
    else:  # pragma: no cover - only the two tdBN kinds exist
        raise TypeError(f"unsupported normalization layer {type(bn).__name__}")
    layer.bias.copy_(shift)
    return TimeDistributed(layer.to(bn.running_mean.device, bn.running_mean.dtype))


def _fold_sequentials(model: nn.Module) -> int:
    folded = 0
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev_name, name in zip(names, names[1:]):
            prev, cur = seq._modules[prev_name], seq._modules[name]
            if isinstance(cur, _TdBatchNorm) and isinstance(_inner(prev), _FOLDABLE):
                _fold_pair(_inner(prev), cur)
                seq._modules[name] = nn.Identity()
                folded += 1
    return folded


def _replace_remaining(module: nn.Module) -> int:
    replaced = 0
    for name, child in list(module._modules.items()):
        if isinstance(child, _TdBatchNorm):
            module._modules[name] = _affine_layer(child)
            replaced += 1
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            raise TypeError(
                f"fuse: {name} is a plain {type(child).__name__}; tdbn.fuse folds tdBN layers only "
                "(TdBatchNorm1d / TdBatchNorm2d)"
            )
        elif child is not None:
            replaced += _replace_remaining(child)
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
    _fold_sequentials(fused)
    _replace_remaining(fused)
    fused.eval()
    return fused


def count_norm_layers(model: nn.Module) -> int:
    """Number of normalization modules (tdBN or torch BN) left in ``model``."""
    return sum(isinstance(m, (_TdBatchNorm, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
