"""Lean training for the units that no single node covers: recompute in backward.

The tdBN unit is one operator that stores the synaptic output ``z`` and per-channel statistics, never the
membrane potentials; the units of tdBN's successors (TEBN, BNTT or TAB before a LIF, BN before an MPBN neuron) are
one autograd node each (:func:`tdbn.layers.temporal_norm.norm_lif`). A combination neither covers (an MPBN neuron
after a per-step normalization, a LIF whose kernels the node cannot call) keeps the same storage discipline by
recomputation (:func:`recomputed`): the forward pass
runs its modules without recording and stores only the unit's inputs (``z``, or a residual junction's two branches,
an identity shortcut's spikes as bits); backward runs the modules once more, recording, and differentiates them.
The spikes are bit-identical both times (the same kernels on the same values), and the normalizations read
:func:`recomputing` so that the second run neither counts the batch again nor moves the running statistics.
Autocast is on in the second run as it was in the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from ..operators.spike_ops import pack_spikes, unpack_spikes

Tensor = torch.Tensor

_state = threading.local()  # autograd runs backward on the thread that calls it (CPU) or a device thread (CUDA)


def recomputing() -> bool:
    """True while a unit's modules run a second time for backward (running statistics must stay as they are)."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def _recompute() -> Iterator[None]:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, spike_args, n_args, *tensors):  # type: ignore[override]
        args, params = tensors[:n_args], tensors[n_args:]
        ctx.fn, ctx.n_args, ctx.params = fn, n_args, params
        ctx.spikes = {i: (args[i].shape, args[i].dtype) for i in spike_args}
        ctx.save_for_backward(*(pack_spikes(a) if i in ctx.spikes else a for i, a in enumerate(args)))
        ctx.device = next((a.device.type for a in args), "cpu")
        ctx.autocast = (torch.is_autocast_enabled(ctx.device), torch.get_autocast_dtype(ctx.device))
        return fn(*args)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        needs = ctx.needs_input_grad[3:]
        args = [unpack_spikes(s, *ctx.spikes[i]) if i in ctx.spikes else s.detach()
                for i, s in enumerate(ctx.saved_tensors)]
        args = [a.requires_grad_(need) for a, need in zip(args, needs)]
        enabled, dtype = ctx.autocast
        with torch.enable_grad(), _recompute(), torch.autocast(ctx.device, dtype=dtype, enabled=enabled):
            out = ctx.fn(*args)
        inputs = [*args, *ctx.params]
        wanted = [t for t, need in zip(inputs, needs) if need]
        got = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True)) if wanted else iter(())
        return (None, None, None, *(next(got) if need else None for need in needs))


def recomputed(fn: Callable[..., Tensor], *args: Tensor, params: Sequence[Tensor] = (),
               spike_args: Sequence[int] = ()) -> Tensor:
    """``fn(*args)`` storing only ``args`` for backward, where ``fn`` runs again to be differentiated.

    ``params``: every parameter ``fn`` reads (they get their gradients); ``spike_args``: the positions of arguments
    that hold only 0 and 1, stored as bits (:func:`tdbn.operators.spike_ops.pack_spikes`).
    """
    return _Recompute.apply(fn, tuple(spike_args), len(args), *args, *params)
