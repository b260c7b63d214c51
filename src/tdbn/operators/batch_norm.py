"""tdBN in training mode (Eq. 5-8), once: the statistics (of this process's batch, or of the batches of all
processes of a group: sync tdBN), the normalized output, the running statistics and the backward pass.

Used by the unit operators (:mod:`tdbn.operators.unit_ops`) and by :class:`TdBatchNormFunction`, the tdBN that is
not part of a unit. Every function takes ``k``, the kernels of the operand's device (:mod:`tdbn.operators.cpu`,
:mod:`tdbn.operators.cuda_units` or :mod:`tdbn.operators.reference`, as the operator's registration chose): their
one-pass tdBN kernels run where ``k.indexes`` the operand, the plain-PyTorch operations everywhere else.

Synchronized statistics (``group``, the name of a ``torch.distributed`` process group, ``""`` for none): each
process adds up, per channel and in float64, ``sum(z)`` and ``sum(z^2)`` of its batch and the count; one
all-reduce gives the global mean and biased variance (Eq. 8: ``E[z^2] - E[z]^2`` in float64). In the backward pass
the two per-channel sums ``sum(dL/dy)`` and ``sum(dL/dy * (z - mean))`` are added over the processes in one
all-reduce; the input gradient uses the global sums, the parameter gradients this process's (DDP averages them,
like every other parameter's gradient, as ``torch.nn.SyncBatchNorm`` does). The running statistics take in the
global batch's mean and unbiased variance.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from .registration import Operator, TdBN, TdBNBatch

Tensor = torch.Tensor

WIDE = (torch.float32, torch.float64)


class NormArgs(NamedTuple):
    """What a tdBN contributes to a unit in training mode (Eq. 5-8): its parameters, its running statistics
    (updated in place), the scale ``alpha * v_th``, ``momentum`` and ``eps``, and the name of the process group
    over which its statistics are synchronized (``""``: this process's batch alone)."""

    weight: Tensor | None
    bias: Tensor | None
    running_mean: Tensor
    running_var: Tensor
    scale: float
    momentum: float
    eps: float
    group: str = ""

    def tdbn(self) -> TdBN:
        """What a unit operator takes of this tdBN."""
        return TdBN(self.weight, self.bias, self.scale)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in WIDE else torch.float32


def wide(t: Tensor) -> Tensor:
    """``t`` in its compute dtype: itself for 32/64-bit floats, a float32 copy otherwise (bool masks too)."""
    return t if t.dtype in WIDE else t.to(torch.float32)


def channel_view(x: Tensor) -> tuple[list[int], list[int], int]:
    """Reduction dims, broadcast shape of a per-channel vector and the count per channel, for ``[T, N, C, ...]``."""
    dims = [0, 1, *range(3, x.dim())]
    shape = [1, 1, x.shape[2]] + [1] * (x.dim() - 3)
    return dims, shape, x.numel() // x.shape[2]


def bn_weight(weight: Tensor | None, invstd: Tensor, scale: float) -> Tensor:
    """``lambda * alpha * v_th / sigma`` per channel (the same operations in the forward pass and every
    recomputation)."""
    return invstd * scale if weight is None else invstd * (weight * scale)


def affine_(centred: Tensor, w: Tensor, bias: Tensor | None, shape: list[int]) -> Tensor:
    """``centred * w + bias`` per channel, in place (Eq. 5, 8)."""
    y = centred.mul_(w.view(shape))
    return y if bias is None else y.add_(bias.view(shape))


# ---------------------------------------------------------------------------------------------------------
# tdBN statistics: this process's batch, or the batches of all processes of a group (sync tdBN)


def all_reduce(t: Tensor, group: str) -> Tensor:
    """``t`` summed over the processes of the group named ``group`` (in place; gloo on CPU, NCCL on CUDA)."""
    from torch.distributed.distributed_c10d import _resolve_process_group

    dist.all_reduce(t, group=_resolve_process_group(group))
    return t


def reduce_sums(sums: list[Tensor], count: int, group: str) -> tuple[list[Tensor], int]:
    """Per-channel float64 sums of this process added over the group in one all-reduce, with the values per
    channel counted (batches may differ between processes): the global sums and count."""
    flat = torch.cat([*sums, sums[0].new_full((1,), float(count))])
    all_reduce(flat, group)
    C = sums[0].numel()
    return [flat[i * C:(i + 1) * C] for i in range(len(sums))], int(flat[-1].item())


def local_sums(z: Tensor, k) -> Tensor:
    """Per-channel ``[sum(z), sum(z^2)]`` in float64 (the one-pass kernel of ``k`` where it applies)."""
    if k.indexes(z, mixed=True):
        return k.bn_sums(z)
    dims, _, _ = channel_view(z)
    z64 = z.to(torch.float64)
    return torch.cat([z64.sum(dims), z64.square().sum(dims)])


def global_stats(zs: list[Tensor], k, group: str) -> tuple[list[tuple[Tensor, Tensor]], int]:
    """Mean and biased variance (Eq. 6-8) per channel of each of ``zs`` over the batches of all processes of
    ``group``, in the compute dtype: one all-reduce of the float64 sums of ``z`` and ``z^2`` of every input, then
    ``var = E[z^2] - E[z]^2`` in float64. Also the global count of values per channel."""
    sums = [local_sums(z, k) for z in zs]
    C = zs[0].shape[2]
    flat, n = reduce_sums(sums, zs[0].numel() // C, group)
    out = []
    for s, z in zip(flat, zs):
        mean = s[:C] / n
        var = (s[C:] / n - mean * mean).clamp_min_(0.0)
        dtype = compute_dtype(z.dtype)
        out.append((mean.to(dtype), var.to(dtype)))
    return out, n


def unbiased_var(var: Tensor, n: int) -> Tensor:
    """The variance the running statistics take in: unbiased over the ``n`` values (like ``torch.nn.BatchNorm``)."""
    return var * (n / max(n - 1, 1))


def bn_forward(z: Tensor, weight, bias, scale, eps, k, stats=None):
    """tdBN in training mode on a compute-dtype tensor ``z`` [T, N, C, ...] (Eq. 5-8): ``(y, mean, invstd,
    running_var)``, the last the unbiased batch variance for the running statistics (:func:`update_running`).
    ``stats``: ``(mean, var, n)`` of a synchronized batch (:func:`global_stats`), else this batch's own."""
    dims, shape, n = channel_view(z)
    one_pass = k.indexes(z)
    centred = None
    if stats is not None:
        mean, var, n = stats
    elif one_pass:
        mean, var = k.bn_stats(z)
    else:
        mean = z.sum(dims) / n
        centred = torch.sub(z, mean.view(shape))
        var = torch.mul(centred, centred).sum(dims) / n  # biased (Eq. 8)
    invstd = torch.rsqrt(var + eps)
    w = bn_weight(weight, invstd, scale)
    if one_pass:
        y = k.bn_affine(z, mean, w, bias)
    else:
        y = affine_(centred if centred is not None else torch.sub(z, mean.view(shape)), w, bias, shape)
    return y, mean, invstd, unbiased_var(var, n)


def update_running(running_mean: Tensor, running_var: Tensor, momentum: float, mean: Tensor,
                   unbiased: Tensor) -> None:
    """Running statistics of a tdBN after a training batch of mean ``mean`` and unbiased variance ``unbiased``
    (:func:`unbiased_var`). The units call it outside their operators: an operator with an autograd formula may
    not mutate its inputs, and this way ``torch.compile`` sees the update as the buffer mutation it is."""
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def bn_recompute(z: Tensor, weight, bias, mean, invstd, scale, k) -> Tensor:
    """The tdBN output again, bit for bit: the forward pass's kernels on the same input and statistics."""
    _, shape, _ = channel_view(z)
    w = bn_weight(weight, invstd, scale)
    if k.indexes(z):
        return k.bn_affine(z, mean, w, bias)
    return affine_(torch.sub(z, mean.view(shape)), w, bias, shape)


def grad_sums(grad_y: Tensor, z: Tensor, mean: Tensor, k) -> tuple[Tensor, Tensor]:
    """Per-channel ``sum(dL/dy)`` and ``sum(dL/dy * (z - mean))`` in float64 (this process's share)."""
    if grad_y.stride() == z.stride() and k.indexes(z, mixed=True):
        return k.bn_grad_sums(grad_y, z, mean, wide=True)
    dims, shape, _ = channel_view(grad_y)
    prod = torch.mul(grad_y, torch.sub(wide(z), mean.view(shape)))
    return grad_y.sum(dims, dtype=torch.float64), prod.sum(dims, dtype=torch.float64)


class SyncedSums(NamedTuple):
    """The tdBN backward sums of a synchronized batch: ``total`` (added over the processes) gives the input
    gradient; ``own`` (this process's) the parameter gradients, which DDP then averages like every other
    parameter's (as ``torch.nn.SyncBatchNorm`` does); ``n``: the global count of values per channel."""

    total: tuple[Tensor, Tensor]
    own: tuple[Tensor, Tensor]
    n: int


def synced_grad_sums(pairs: list[tuple[Tensor, Tensor]], count: int, group: str, dtype: torch.dtype):
    """The float64 backward sums ``(sum_g, sum_gx)`` of one or two tdBNs, added over ``group`` in one
    all-reduce: a :class:`SyncedSums` per pair, in ``dtype``."""
    flat, n = reduce_sums([t for pair in pairs for t in pair], count, group)
    return [SyncedSums((flat[2 * i].to(dtype), flat[2 * i + 1].to(dtype)), (g.to(dtype), gx.to(dtype)), n)
            for i, (g, gx) in enumerate(pairs)]


def bn_backward(grad_y, z, weight, mean, invstd, scale, k, sums=None, into: Tensor | None = None):
    """tdBN backward pass (Eq. 5-8): ``(dL/dz, dL/dlambda, dL/dbeta)``; ``sums`` = per-channel ``sum(dL/dy)``
    and ``sum(dL/dy * (z - mean))`` when already computed (by the fused LIF backward kernel), or the
    :class:`SyncedSums` of a synchronized batch. ``into``: a
    temporary that nothing reads afterwards (``grad_y`` itself at its last use, or another private one), which
    the compiled kernel writes ``dL/dz`` into when it has ``z``'s dtype and strides: one fresh ``[T, ...]``
    tensor fewer per unit, and its first-touch page faults."""
    dims, shape, n = channel_view(grad_y)
    own = None
    if isinstance(sums, SyncedSums):
        sums, own, n = sums
    one_pass = grad_y.stride() == z.stride() and k.indexes(z, mixed=True)
    if not one_pass:
        z = wide(z)
    lam = invstd.new_ones(()) if weight is None else weight
    gain = invstd * (lam * scale)  # lambda * alpha * v_th / sigma
    xc = prod = None
    if sums is not None:
        sum_g, sum_gx = sums
    elif one_pass:
        sum_g, sum_gx = k.bn_grad_sums(grad_y, z, mean)
    else:
        sum_g = grad_y.sum(dims)  # dL/dbeta
        xc = torch.sub(z, mean.view(shape))
        prod = torch.mul(grad_y, xc)
        sum_gx = prod.sum(dims)  # sigma * sum(dy * x_hat)
    # dL/dz = k * (dy - mean(dy) - x_hat * mean(dy * x_hat)),  x_hat = (z - mean) * invstd
    c_x = -gain * invstd * invstd * sum_gx / n
    c_0 = -gain * sum_g / n
    if one_pass:
        if into is not None and (into.dtype != z.dtype or into.stride() != z.stride()):
            into = None
        grad_z = k.bn_grad_input(grad_y, z, mean, gain, c_0, c_x, out=into)
    else:
        if xc is None:
            xc = torch.sub(z, mean.view(shape))
        grad_z = torch.mul(grad_y, gain.view(shape), out=prod).add_(c_0.view(shape))
        grad_z.add_(xc.mul_(c_x.view(shape)))
    if own is not None:  # parameter gradients of this process's batch
        sum_g, sum_gx = own
    return grad_z, sum_gx * invstd * scale, sum_g


def kernel_affine(weight, bias, mean, invstd, scale: float):
    """``(mean, lambda * alpha * v_th / sigma, beta)``: a tdBN as the unit kernels apply it."""
    return mean, bn_weight(weight, invstd, scale), bias


def kernel_stats(z: Tensor, k, weight, bias, scale: float, eps: float, stats=None):
    """tdBN statistics of ``z`` by the one-pass kernels ``k``, or ``stats = (mean, var, n)`` of a synchronized
    batch: ``(affine, mean, invstd, unbiased variance)`` (:func:`kernel_affine`, :func:`unbiased_var`)."""
    if stats is None:
        mean, var = k.bn_stats(z)
        n = z.numel() // z.shape[2]
    else:
        mean, var, n = stats
    invstd = torch.rsqrt(var + eps)
    return kernel_affine(weight, bias, mean, invstd, scale), mean, invstd, unbiased_var(var, n)


def synced_stats(zs: list[Tensor], k, group: str) -> list:
    """``(mean, var, n)`` of each of ``zs`` over the processes of ``group`` (one all-reduce), or Nones when the
    statistics are this process's own (``group`` empty)."""
    if not group:
        return [None] * len(zs)
    stats, n = global_stats(zs, k, group)
    return [(mean, var, n) for mean, var in stats]


# ---------------------------------------------------------------------------------------------------------
# the tdBN outside a unit


def _td_batch_norm_forward(x: Tensor, bn: TdBN, eps: float, group: str, k):
    """``(y, mean, invstd, unbiased variance)`` of :func:`bn_forward`, the statistics over the processes of
    ``group`` when it is not empty."""
    (stats,) = synced_stats([x], k, group)
    return bn_forward(x, *bn, eps, k, stats)


def _td_batch_norm_backward(grad_y: Tensor, x: Tensor, bn: TdBNBatch, group: str, k):
    """``(dL/dx, dL/dlambda, dL/dbeta)`` of :func:`bn_backward`."""
    sums = None
    if group:
        (sums,) = synced_grad_sums([grad_sums(grad_y, x, bn.mean, k)], x.numel() // x.shape[2], group, bn.mean.dtype)
    return bn_backward(grad_y, x, bn.weight, bn.mean, bn.invstd, bn.scale, k, sums)


td_batch_norm_forward = Operator("td_batch_norm_forward", _td_batch_norm_forward, "(Tensor, Tensor, Tensor, Tensor)")
td_batch_norm_backward = Operator("td_batch_norm_backward", _td_batch_norm_backward, "(Tensor, Tensor, Tensor)")


@td_batch_norm_forward.register_fake
def _(x, bn, eps, group):
    dtype = compute_dtype(x.dtype) if group else x.dtype  # synchronized statistics are in the compute dtype
    stats = x.new_empty(x.shape[2], dtype=dtype)
    return torch.empty_like(x, dtype=dtype), stats, torch.empty_like(stats), torch.empty_like(stats)


@td_batch_norm_backward.register_fake
def _(grad_y, x, bn, group):
    return torch.empty_like(grad_y), torch.empty_like(bn.mean), torch.empty_like(bn.mean)


class TdBatchNormFunction(torch.autograd.Function):
    """tdBN in training mode (Eq. 5-8) on ``[T, N, C, ...]``: batch statistics per channel over T, N and space,
    ``y = lambda * alpha * v_th * (x - mean) / sqrt(var + eps) + beta``, running statistics updated in place
    (unbiased variance, like ``torch.nn.BatchNorm``), and the batch-norm backward pass written out.

    The same mathematics as the plain formulation (``F.batch_norm`` on ``[T*N, C, ...]`` with weight
    ``lambda * alpha * v_th``), equal up to float rounding, with cheaper kernels on the CPU. Storage for
    backward: the input (unexpanded when it is expanded over T, as for static images) and three per-channel
    vectors. The kernels are the operators ``tdbn::td_batch_norm_forward`` / ``_backward``, registered per device
    like the units'.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, scale: float, momentum: float, eps: float,  # type: ignore[override]
                group: str = ""):
        ctx.scale, ctx.group = scale, group
        y, mean, invstd, unbiased = td_batch_norm_forward(x, TdBN(weight, bias, scale), eps, group)
        if running_mean is not None and running_var is not None:
            update_running(running_mean, running_var, momentum, mean, unbiased)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = td_batch_norm_backward(grad_y, x, TdBNBatch(weight, bias, mean, invstd, ctx.scale),
                                                        ctx.group)
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


# ---------------------------------------------------------------------------------------------------------
# a folded tdBN without a conv to fold into: y = w * x + b per channel, at inference


def _channel_affine(x: Tensor, weight: Tensor, bias: Tensor | None, k) -> Tensor:
    """``y[:, c] = weight[c] * x[:, c] + bias[c]`` for ``x [N, C, ...]`` (``weight`` of ``C`` values in any
    shape): one pass of the device's kernel where it indexes ``x``, else the multiply and the add, with the same
    two roundings either way."""
    w = weight.reshape(-1)
    b = None if bias is None else bias.reshape(-1)
    if k.indexes(x.unsqueeze(0)):
        return k.bn_affine(x.unsqueeze(0), torch.zeros_like(w), w, b).squeeze(0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = x * w.view(shape)
    return y if b is None else y + b.view(shape)


#: no autograd registration: :class:`tdbn.layers.affine.ChannelAffine2d` calls it without gradients only
channel_affine = Operator("channel_affine", _channel_affine, "Tensor")
channel_affine.register_fake(lambda x, weight, bias: torch.empty_like(x))
