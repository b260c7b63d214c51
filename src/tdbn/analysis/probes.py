"""Forward hooks that look inside a model without changing it.

Every probe here registers its hooks on entry and removes them on exit (also when the forward raises), runs the
model in eval mode without gradients, and restores each module's training flag afterwards. The hooks only read
tensors: the model's output is the same with and without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..layers import LIF, TimeDistributed

#: The synaptic (weight) layers whose operations are counted: conv and fully-connected.
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

Hook = Callable[[str, nn.Module, tuple, torch.Tensor], None]


def named_layers(model: nn.Module, types: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every submodule of one of ``types``, in registration order.

    Modules wrapped in :class:`~tdbn.layers.TimeDistributed` are listed under the wrapper's name (``.module``
    dropped), so names read like the model's structure: ``encoder.conv``, ``body.stage1.0.conv``.
    """
    out = []
    for name, m in model.named_modules():
        if isinstance(m, types):
            out.append((name.removesuffix(".module"), m))
    return out


def lif_layers(model: nn.Module) -> list[tuple[str, LIF]]:
    """Every LIF module of ``model`` in registration order (= forward order for the paper's networks)."""
    return named_layers(model, (LIF,))  # type: ignore[return-value]


def synaptic_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv / linear layer of ``model`` (shortcut projections included), in registration order."""
    return named_layers(model, SYNAPTIC)


def io_layers(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The encoding conv and the decoding fc of a :class:`~tdbn.models.SpikingNet` (Alg. 2), unwrapped.

    Raises ``TypeError`` for a model without ``encoder.conv`` and ``decoder`` (build it with
    ``tdbn.models.create``, or pass the two layers explicitly to the function you called).
    """
    enc = getattr(getattr(model, "encoder", None), "conv", None)
    dec = getattr(model, "decoder", None)
    if enc is None or dec is None:
        raise TypeError(
            f"{type(model).__name__} has no encoder.conv / decoder: expected a tdbn SpikingNet "
            "(tdbn.models.create(...)); for other models pass the encoding and decoding layers explicitly"
        )
    unwrap = lambda m: m.module if isinstance(m, TimeDistributed) else m  # noqa: E731
    return unwrap(enc), unwrap(dec)


@contextmanager
def forward_hooks(layers: Sequence[tuple[str, nn.Module]], hook: Hook) -> Iterator[None]:
    """Call ``hook(name, module, inputs, output)`` after each forward of each listed layer, inside the block.

    The hooks are removed when the block exits, normally or by an exception.
    """
    handles = []
    try:
        for name, module in layers:
            handles.append(module.register_forward_hook(lambda m, i, o, _n=name: hook(_n, m, i, o)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode without gradients inside the block; restore every module's mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
