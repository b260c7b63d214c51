"""tdBN in training mode with its backward pass written out, and the switch for the lean training path.

:class:`TdBatchNormFunction` is tdBN in training mode (Eq. 5-8) for a tdBN that is not part of a unit of
:mod:`tdbn.functional.units` (a user's own layer stack, or a shortcut tdBN whose sum is not followed by a LIF):
the same mathematics as ``F.batch_norm`` (equal up to float rounding, tested in float64), several times faster
on the CPU than ATen's NCHW batch-norm kernels (compiled kernels of :mod:`tdbn.functional.native` where they
apply). It stores its input and three per-channel vectors.

:func:`lean_training` turns the whole lean path off inside a block, for comparisons: the model's units then run
their modules one after the other (``F.batch_norm``, then a LIF that stores ``u``) and convs over spikes store
their float input, as the plain formulation does. Values and gradients are the same either way (up to float
rounding in tdBN).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.autograd.function import once_differentiable

from . import native as _native
from .units import _bn_backward, _bn_forward, _global_stats, _grad_sums, _synced_grad_sums

Tensor = torch.Tensor

# a plain module flag (not a ContextVar): torch.compile reads it and guards on its value
_lean = True


def lean_enabled() -> bool:
    """True unless turned off by :func:`lean_training`."""
    return _lean


@contextmanager
def lean_training(enabled: bool) -> Iterator[None]:
    """Turn the lean training path on or off inside the block (on by default). Off, every unit runs its modules
    one after the other and autograd stores what the plain formulation stores; values and gradients are the same
    either way (up to float rounding in tdBN). For comparisons and benchmarks.

    Example:
        >>> unit = tdbn.layers.TdBNLIF(tdbn.TdBatchNorm1d(3), tdbn.LIF())
        >>> z = torch.randn(4, 2, 3, requires_grad=True)
        >>> def big_saved(enabled):  # tensors of z's size that autograd keeps for backward
        ...     saved = []
        ...     with lean_training(enabled), torch.autograd.graph.saved_tensors_hooks(
        ...             lambda t: saved.append(t) or t, lambda t: t):
        ...         unit(z)
        ...     return sum(t.numel() == z.numel() for t in saved)
        >>> big_saved(True)  # the unit: z only (u is recomputed in backward)
        1
        >>> big_saved(False)  # F.batch_norm keeps z, the LIF keeps u
        2
    """
    global _lean
    before, _lean = _lean, bool(enabled)
    try:
        yield
    finally:
        _lean = before


def unpack_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``mask`` (bool) as 0/1 values of ``dtype``; read as uint8, which the CPU converts several times faster."""
    return mask.view(torch.uint8).to(dtype)


class TdBatchNormFunction(torch.autograd.Function):
    """tdBN in training mode (Eq. 5-8) on ``[T, N, C, ...]``: batch statistics per channel over T, N and space,
    ``y = lambda * alpha * v_th * (x - mean) / sqrt(var + eps) + beta``, running statistics updated in place
    (unbiased variance, like ``torch.nn.BatchNorm``), and the batch-norm backward pass written out.

    The same mathematics as the plain formulation (``F.batch_norm`` on ``[T*N, C, ...]`` with weight
    ``lambda * alpha * v_th``), equal up to float rounding, with cheaper kernels on the CPU. Storage for
    backward: the input (unexpanded when it is expanded over T, as for static images) and three per-channel
    vectors.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, scale: float, momentum: float, eps: float,  # type: ignore[override]
                group: str = ""):
        ctx.scale, ctx.group = scale, group
        # the units' tdBN maths: compiled kernels where they apply (same mathematics, fewer passes), else ATen
        stats = None
        if group:
            ((mean, var),), n = _global_stats([x], _native.bn_layout(x), group)
            stats = (mean, var, n)
        y, mean, invstd, unbiased = _bn_forward(x, weight, bias, scale, eps, True, stats)
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias, mean, invstd = ctx.saved_tensors
        sums = None
        if ctx.group:
            (sums,) = _synced_grad_sums([_grad_sums(grad_y, x, mean, True)], x.numel() // x.shape[2], ctx.group,
                                        mean.dtype)
        grad_x, grad_w, grad_b = _bn_backward(grad_y, x, weight, mean, invstd, ctx.scale, True, sums)
        grad_x = grad_x if ctx.needs_input_grad[0] else None
        grad_w = grad_w if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = grad_b if bias is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def td_batch_norm_train(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    alpha: float,
    v_th: float,
    momentum: float,
    eps: float,
    group: str = "",
) -> Tensor:
    """tdBN of ``x`` ``[T, N, C, ...]`` in training mode (Eq. 5-8) through :class:`TdBatchNormFunction`;
    ``group``: the name of a process group whose batches the statistics span (sync tdBN), ``""`` for this
    process's batch alone.

    The same values, running-statistics update and gradients as the plain formulation
    ``F.batch_norm(x.flatten(0, 1), ..., weight * alpha * v_th, ...)`` up to float rounding. Floating-point
    inputs of 32 or 64 bits (others take the plain formulation in :func:`tdbn.functional.td_batch_norm`).
    """
    if x.numel() == x.shape[2]:  # the check F.batch_norm makes in training mode
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    return TdBatchNormFunction.apply(x, weight, bias, running_mean, running_var, float(alpha * v_th), momentum, eps,
                                     group)
