"""The memory-saving units of training as PyTorch custom operators (``torch.ops.tdbn.*``).

A spiking ResNet is built from three units; each is one operator that owns what it stores for the backward pass
and what it recomputes there:

- :func:`td_bn_lif`: ``spikes = LIF(tdBN(z))`` for the output ``z`` of a conv or fc layer (Eq. 1-3, 5-8).
  Stored: ``z`` (in its own dtype: bfloat16/float16 under autocast) and three per-channel vectors. The
  backward pass recomputes the tdBN output and the membrane potentials ``u`` from them (the same floating-point
  operations as the forward pass, so the same ``u`` bit for bit), walks BPTT back in time (Eq. 14-18) and ends
  with the tdBN backward pass. No ``[T, ...]`` membrane tensor is ever stored.
- :func:`td_bn_add_lif`: the residual junction ``LIF(tdBN_a(za) + tdBN_b(zb))`` of Fig. 5b, and
  ``LIF(tdBN_a(za) + zb)`` for an identity shortcut without normalization: the same storage (``za``, ``zb``, or
  the bits of ``zb`` when it holds spikes).
- :func:`spike_conv2d`: a conv whose input holds only 0/1 (spikes); it stores the input as bits
  (:func:`pack_spikes`, 8 per byte) instead of 2 or 4 bytes per value, for its weight gradient. The gradients are ATen's ``convolution_backward``, the
  formula autograd uses for ``F.conv2d``, on the same values.

Each operator has one reference implementation in plain PyTorch (the default kernel, for every device), the
compiled CPU kernels of :mod:`tdbn.functional.native` on the CPU, and the Triton LIF kernels on CUDA (when
``triton`` is installed; otherwise the reference, after one warning). Registered with ``register_fake`` and
``register_autograd``, so ``torch.compile(model, fullgraph=True)`` traces them as single nodes (their storage
stays theirs) and ``torch.autograd.graph.saved_tensors_hooks`` (activation checkpointing, CPU offload) sees
exactly what they save.

Mixed precision (autocast, or any bfloat16/float16 input). Rounding rules:

- the unit takes the low-precision conv output ``z`` as it is and computes in float32: the tdBN statistics
  (accumulated in float64 by the CPU kernels, float32 otherwise), the normalized input, the membrane recursion
  and every gradient;
- it stores ``z`` in its low precision and returns spikes in it (0 and 1 are exact in every float format);
- the input gradient is computed in float32 and rounded once to ``z``'s dtype; the tdBN weight and bias
  gradients stay float32, like the parameters and running statistics.

So the gradients under autocast are those of the float32 unit applied to the rounded ``z``, rounded once.
float32 and float64 inputs are computed in their own precision, bit-identical to the unfused modules' path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.library import custom_op

from . import recursions
from . import native as _native
from .params import LIFParameters

Tensor = torch.Tensor

_WIDE = (torch.float32, torch.float64)


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


# ---------------------------------------------------------------------------------------------------------
# kernels per device


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


class Kernels(NamedTuple):
    """The kernels an operator runs on one device: the LIF recursions, whether the compiled tdBN and unit kernels
    of :mod:`tdbn.functional.native` apply, and whether ``integrate`` can write spikes without a ``u`` buffer."""

    integrate: Callable
    bptt: Callable
    compiled_tdbn: bool
    integrate_without_u: bool


REFERENCE = Kernels(recursions.integrate_reference, recursions.bptt_reference, False, True)
CPU = Kernels(recursions.integrate, recursions.bptt, True, True)


def _reference_kernels() -> Kernels:
    return REFERENCE


def _cpu_kernels() -> Kernels:
    return CPU


def _cuda_kernels():
    try:
        from . import lif_triton
    except ImportError as err:
        _warn_once("triton", f"tdbn: triton is not importable ({err}); the LIF units on CUDA run the plain PyTorch "
                   "reference loops (same results, slower). pip install 'tdbn[triton]' for the fused kernels.")
        return _reference_kernels()
    return Kernels(lif_triton.integrate, lif_triton.bptt, False, False)


def _spikes_of(parts: list[Tensor], tau: float, v_th: float, kernels, dtype: torch.dtype) -> Tensor:
    """Spikes (in ``dtype``) of LIF neurons fed ``y = parts.pop()`` (Eq. 1-3). ``y`` is a temporary, taken out of
    ``parts`` so that it is freed as soon as the spikes exist (the peak of a low-precision step counts it)."""
    y = parts.pop()
    spikes = torch.empty_like(y)
    kernels.integrate(y, None if kernels.integrate_without_u else y, tau, v_th, spikes)
    del y
    return spikes if spikes.dtype == dtype else spikes.to(dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _WIDE else torch.float32


def _wide(t: Tensor) -> Tensor:
    """``t`` in its compute dtype: itself for 32/64-bit floats, a float32 copy otherwise (bool masks too)."""
    return t if t.dtype in _WIDE else t.to(torch.float32)


def _channel_view(x: Tensor) -> tuple[list[int], list[int], int]:
    """Reduction dims, broadcast shape of a per-channel vector and the count per channel, for ``[T, N, C, ...]``."""
    dims = [0, 1, *range(3, x.dim())]
    shape = [1, 1, x.shape[2]] + [1] * (x.dim() - 3)
    return dims, shape, x.numel() // x.shape[2]


def _bn_weight(weight: Tensor | None, invstd: Tensor, scale: float) -> Tensor:
    """``lambda * alpha * v_th / sigma`` per channel (the same operations in the forward pass and every
    recomputation)."""
    return invstd * scale if weight is None else invstd * (weight * scale)


def _affine_(centred: Tensor, w: Tensor, bias: Tensor | None, shape: list[int]) -> Tensor:
    """``centred * w + bias`` per channel, in place (Eq. 5, 8)."""
    y = centred.mul_(w.view(shape))
    return y if bias is None else y.add_(bias.view(shape))


# ---------------------------------------------------------------------------------------------------------
# tdBN statistics: this process's batch, or the batches of all processes of a group (sync tdBN)


def _all_reduce(t: Tensor, group: str) -> Tensor:
    """``t`` summed over the processes of the group named ``group`` (in place; gloo on CPU, NCCL on CUDA)."""
    from torch.distributed.distributed_c10d import _resolve_process_group

    dist.all_reduce(t, group=_resolve_process_group(group))
    return t


def _reduce_sums(sums: list[Tensor], count: int, group: str) -> tuple[list[Tensor], int]:
    """Per-channel float64 sums of this process added over the group in one all-reduce, with the values per
    channel counted (batches may differ between processes): the global sums and count."""
    flat = torch.cat([*sums, sums[0].new_full((1,), float(count))])
    _all_reduce(flat, group)
    C = sums[0].numel()
    return [flat[i * C:(i + 1) * C] for i in range(len(sums))], int(flat[-1].item())


def _local_sums(z: Tensor, layout) -> Tensor:
    """Per-channel ``[sum(z), sum(z^2)]`` in float64 (the compiled one-pass kernel where it applies)."""
    if layout is not None:
        return _native.bn_sums(z, layout)
    dims, _, _ = _channel_view(z)
    z64 = z.to(torch.float64)
    return torch.cat([z64.sum(dims), z64.square().sum(dims)])


def _global_stats(zs: list[Tensor], layout, group: str) -> tuple[list[tuple[Tensor, Tensor]], int]:
    """Mean and biased variance (Eq. 6-8) per channel of each of ``zs`` over the batches of all processes of
    ``group``, in the compute dtype: one all-reduce of the float64 sums of ``z`` and ``z^2`` of every input, then
    ``var = E[z^2] - E[z]^2`` in float64. Also the global count of values per channel."""
    sums = [_local_sums(z, layout) for z in zs]
    C = zs[0].shape[2]
    flat, n = _reduce_sums(sums, zs[0].numel() // C, group)
    out = []
    for s, z in zip(flat, zs):
        mean = s[:C] / n
        var = (s[C:] / n - mean * mean).clamp_min_(0.0)
        dtype = _compute_dtype(z.dtype)
        out.append((mean.to(dtype), var.to(dtype)))
    return out, n


def _running_var(var: Tensor, n: int) -> Tensor:
    """The variance the running statistics take in: unbiased over the ``n`` values (like ``torch.nn.BatchNorm``)."""
    return var * (n / max(n - 1, 1))


def _bn_forward(z: Tensor, weight, bias, scale, eps, native: bool, stats=None):
    """tdBN in training mode on a compute-dtype tensor ``z`` [T, N, C, ...] (Eq. 5-8): ``(y, mean, invstd,
    running_var)``, the last the unbiased batch variance for the running statistics (:func:`_update_running`).
    ``stats``: ``(mean, var, n)`` of a synchronized batch (:func:`_global_stats`), else this batch's own."""
    dims, shape, n = _channel_view(z)
    layout = _native.bn_layout(z) if native else None
    centred = None
    if stats is not None:
        mean, var, n = stats
    elif layout is not None:
        mean, var = _native.bn_stats(z, layout)
    else:
        mean = z.sum(dims) / n
        centred = torch.sub(z, mean.view(shape))
        var = torch.mul(centred, centred).sum(dims) / n  # biased (Eq. 8)
    invstd = torch.rsqrt(var + eps)
    w = _bn_weight(weight, invstd, scale)
    if layout is not None:
        y = _native.bn_affine(z, mean, w, bias, layout)
    else:
        y = _affine_(centred if centred is not None else torch.sub(z, mean.view(shape)), w, bias, shape)
    return y, mean, invstd, _running_var(var, n)


def _update_running(norm: "NormArgs", mean: Tensor, running_var: Tensor) -> None:
    """Running statistics of a tdBN after a training batch (``running_var``: the batch's unbiased variance).
    Outside the operators: an operator with an autograd formula may not mutate its inputs, and this way
    ``torch.compile`` sees the update as the buffer mutation it is."""
    with torch.no_grad():
        m = norm.momentum
        norm.running_mean.mul_(1 - m).add_(mean.to(norm.running_mean.dtype), alpha=m)
        norm.running_var.mul_(1 - m).add_(running_var.to(norm.running_var.dtype), alpha=m)


def _bn_recompute(z: Tensor, weight, bias, mean, invstd, scale, native: bool) -> Tensor:
    """The tdBN output again, bit for bit: the forward pass's kernels on the same input and statistics."""
    _, shape, _ = _channel_view(z)
    w = _bn_weight(weight, invstd, scale)
    layout = _native.bn_layout(z) if native else None
    if layout is not None:
        return _native.bn_affine(z, mean, w, bias, layout)
    return _affine_(torch.sub(z, mean.view(shape)), w, bias, shape)


def _grad_sums(grad_y: Tensor, z: Tensor, mean: Tensor, native: bool) -> tuple[Tensor, Tensor]:
    """Per-channel ``sum(dL/dy)`` and ``sum(dL/dy * (z - mean))`` in float64 (this process's share)."""
    layout = _native.bn_layout(z, mixed=True) if native and grad_y.stride() == z.stride() else None
    if layout is not None:
        return _native.bn_grad_sums(grad_y, z, mean, layout, wide=True)
    dims, shape, _ = _channel_view(grad_y)
    prod = torch.mul(grad_y, torch.sub(_wide(z), mean.view(shape)))
    return grad_y.sum(dims, dtype=torch.float64), prod.sum(dims, dtype=torch.float64)


class SyncedSums(NamedTuple):
    """The tdBN backward sums of a synchronized batch: ``total`` (added over the processes) gives the input
    gradient; ``own`` (this process's) the parameter gradients, which DDP then averages like every other
    parameter's (as ``torch.nn.SyncBatchNorm`` does); ``n``: the global count of values per channel."""

    total: tuple[Tensor, Tensor]
    own: tuple[Tensor, Tensor]
    n: int


def _synced_grad_sums(pairs: list[tuple[Tensor, Tensor]], count: int, group: str, dtype: torch.dtype):
    """The float64 backward sums ``(sum_g, sum_gx)`` of one or two tdBNs, added over ``group`` in one
    all-reduce: a :class:`SyncedSums` per pair, in ``dtype``."""
    flat, n = _reduce_sums([t for pair in pairs for t in pair], count, group)
    return [SyncedSums((flat[2 * i].to(dtype), flat[2 * i + 1].to(dtype)), (g.to(dtype), gx.to(dtype)), n)
            for i, (g, gx) in enumerate(pairs)]


def _bn_backward(grad_y, z, weight, mean, invstd, scale, native: bool, sums=None, into: Tensor | None = None):
    """tdBN backward pass (Eq. 5-8): ``(dL/dz, dL/dlambda, dL/dbeta)``; ``sums`` = per-channel ``sum(dL/dy)``
    and ``sum(dL/dy * (z - mean))`` when already computed (by the fused LIF backward kernel), or the
    :class:`SyncedSums` of a synchronized batch. ``into``: a
    temporary that nothing reads afterwards (``grad_y`` itself at its last use, or another private one), which
    the compiled kernel writes ``dL/dz`` into when it has ``z``'s dtype and strides: one fresh ``[T, ...]``
    tensor fewer per unit, and its first-touch page faults."""
    dims, shape, n = _channel_view(grad_y)
    own = None
    if isinstance(sums, SyncedSums):
        sums, own, n = sums
    layout = _native.bn_layout(z, mixed=True) if native and grad_y.stride() == z.stride() else None
    if layout is None:
        z = _wide(z)
    lam = invstd.new_ones(()) if weight is None else weight
    k = invstd * (lam * scale)  # lambda * alpha * v_th / sigma
    xc = prod = None
    if sums is not None:
        sum_g, sum_gx = sums
    elif layout is not None:
        sum_g, sum_gx = _native.bn_grad_sums(grad_y, z, mean, layout)
    else:
        sum_g = grad_y.sum(dims)  # dL/dbeta
        xc = torch.sub(z, mean.view(shape))
        prod = torch.mul(grad_y, xc)
        sum_gx = prod.sum(dims)  # sigma * sum(dy * x_hat)
    # dL/dz = k * (dy - mean(dy) - x_hat * mean(dy * x_hat)),  x_hat = (z - mean) * invstd
    c_x = -k * invstd * invstd * sum_gx / n
    c_0 = -k * sum_g / n
    if layout is not None:
        if into is not None and (into.dtype != z.dtype or into.stride() != z.stride()):
            into = None
        grad_z = _native.bn_grad_input(grad_y, z, mean, k, c_0, c_x, layout, out=into)
    else:
        if xc is None:
            xc = torch.sub(z, mean.view(shape))
        grad_z = torch.mul(grad_y, k.view(shape), out=prod).add_(c_0.view(shape))
        grad_z.add_(xc.mul_(c_x.view(shape)))
    if own is not None:  # parameter gradients of this process's batch
        sum_g, sum_gx = own
    return grad_z, sum_gx * invstd * scale, sum_g


def _matching(ref: Tensor, t: Tensor) -> Tensor:
    """``t`` in ``ref``'s dtype and strides (a copy only where they differ)."""
    if t.dtype == ref.dtype and t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)


def _unit_layout(z: Tensor, native: bool, *others: Tensor | None) -> "_native.Layout | None":
    """The layout for the compiled unit kernels (:func:`tdbn.functional.native.unit_forward`), which read ``z``
    in its own dtype (float32, float64, or bfloat16 computed in float32), or None: not the CPU kernels, another
    dtype (float16), a layout they cannot index, or ``others`` with another dtype or strides than ``z``."""
    if not native:
        return None
    if z.dtype not in _native.COMPUTE:
        _warn_once("float16-cpu", f"tdbn: the compiled CPU unit kernels take float32, float64 and bfloat16; these "
                   f"{z.dtype} units compute through float32 copies (same storage, slower). On the CPU, autocast "
                   "to torch.bfloat16 instead.")
        return None
    if any(o is not None and (o.dtype != z.dtype or o.shape != z.shape or o.stride() != z.stride()) for o in others):
        return None
    return _native.bn_layout(z, mixed=True)


def _dense_low_precision(z: Tensor, native: bool) -> Tensor:
    """``z``, or for a bfloat16/float16 ``z`` that the unit kernels cannot index (the encoder's conv output of a
    static image, repeated over time with stride 0) a dense copy in its own dtype: the kernels then read it
    as they read any bfloat16 ``z`` (float32 and float64 keep their path, bit for bit)."""
    if z.dtype in _WIDE or not native or _unit_layout(z, native) is not None:
        return z
    return z.contiguous()


def _affine(weight, bias, mean, invstd, scale: float) -> "_native.Affine":
    """``(mean, lambda * alpha * v_th / sigma, beta)``: a tdBN as the unit kernels apply it."""
    return mean, _bn_weight(weight, invstd, scale), bias


def _stats(z: Tensor, layout, weight, bias, scale: float, eps: float, stats=None):
    """tdBN statistics of ``z`` by the compiled kernels, or ``stats = (mean, var, n)`` of a synchronized batch:
    ``(affine, mean, invstd, running_var)`` (:func:`_affine`, :func:`_running_var`)."""
    if stats is None:
        mean, var = _native.bn_stats(z, layout)
        n = z.numel() // z.shape[2]
    else:
        mean, var, n = stats
    invstd = torch.rsqrt(var + eps)
    return _affine(weight, bias, mean, invstd, scale), mean, invstd, _running_var(var, n)


def _synced(zs: list[Tensor], layout, group: str) -> list | None:
    """``(mean, var, n)`` of each of ``zs`` over the processes of ``group`` (one all-reduce), or Nones when the
    statistics are this process's own (``group`` empty)."""
    if not group:
        return [None] * len(zs)
    stats, n = _global_stats(zs, layout, group)
    return [(mean, var, n) for mean, var in stats]


def _no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else _Null()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------------------
# LIF (Eq. 1-3, 14-18)


def _lif_forward_impl(x, tau, v_th, keep_u, kernels: Kernels):
    with _no_autocast(x.device):
        spikes = torch.empty_like(x)  # keeps a channels-last layout
        if keep_u or not kernels.integrate_without_u:
            u = torch.empty_like(spikes)
            kernels.integrate(x, u, tau, v_th, spikes)
            return spikes, (u if keep_u else x.new_empty(0))
        kernels.integrate(x, None, tau, v_th, spikes)  # no [T, ...] membrane buffer at all
        return spikes, x.new_empty(0)


def _lif_backward_impl(grad_spikes, u, tau, v_th, width, surrogate, kernels: Kernels):
    with _no_autocast(u.device):
        return kernels.bptt(_matching(u, grad_spikes), u, tau, v_th, width, surrogate)


def _triton_kernels() -> Kernels:
    from . import lif_triton  # checked by the caller (check_backend)

    return Kernels(lif_triton.integrate, lif_triton.bptt, False, False)


def _define_lif_ops(name: str, default, per_device: dict):
    """``tdbn::{name}_forward`` / ``tdbn::{name}_backward`` with their fake and autograd registrations; the
    kernels: ``default()`` for every device, ``per_device[key]()`` where registered (the dispatcher chooses)."""

    @custom_op(f"tdbn::{name}_forward", mutates_args=())
    def forward(x: Tensor, tau: float, v_th: float, width: float, surrogate: str,
                keep_u: bool) -> tuple[Tensor, Tensor]:
        """Spikes and ``u`` of Eq. 1-3; ``u`` is empty unless ``keep_u``."""
        return _lif_forward_impl(x, tau, v_th, keep_u, default())

    @custom_op(f"tdbn::{name}_backward", mutates_args=())
    def backward(grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str) -> Tensor:
        """``dL/dx`` by the reverse-time recursion of Eq. 14-15, 18 from the stored ``u``."""
        return _lif_backward_impl(grad_spikes, u, tau, v_th, width, surrogate, default())

    for device, kernels in per_device.items():
        forward.register_kernel(device)(
            lambda x, tau, v_th, width, surrogate, keep_u, k=kernels: _lif_forward_impl(x, tau, v_th, keep_u, k()))
        backward.register_kernel(device)(
            lambda g, u, tau, v_th, width, surrogate, k=kernels: _lif_backward_impl(g, u, tau, v_th, width,
                                                                                   surrogate, k()))
    forward.register_fake(lambda x, tau, v_th, width, surrogate, keep_u: (
        torch.empty_like(x), torch.empty_like(x) if keep_u else x.new_empty(0)))
    backward.register_fake(lambda g, u, tau, v_th, width, surrogate: torch.empty_like(u))
    backward_op = getattr(torch.ops.tdbn, f"{name}_backward")

    def setup(ctx, inputs, output):
        _, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, _ = inputs
        ctx.save_for_backward(output[1])

    def grad(ctx, grad_spikes, _grad_u):
        (u,) = ctx.saved_tensors
        return backward_op(grad_spikes, u, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate), None, None, None, None, None

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


# the LIF on the device's kernels: the reference loops, the compiled loops on the CPU, Triton on CUDA
_define_lif_ops("lif", _reference_kernels, {"cpu": _cpu_kernels, "cuda": _cuda_kernels})
# the Triton kernels on every device, asked for explicitly (LIF(backend="triton"); its interpreter on the CPU)
_define_lif_ops("lif_triton", _triton_kernels, {})


def lif_op(x: Tensor, p: LIFParameters, *, return_membrane: bool = False, backend: str = "torch"):
    """Spikes (and ``u``, detached) of :func:`tdbn.functional.lif` through ``torch.ops.tdbn.lif_forward`` (the
    device's kernels), or ``torch.ops.tdbn.lif_triton_forward`` for ``backend="triton"``. The operator stores
    ``u`` for the backward pass when ``x`` needs a gradient, and no ``[T, ...]`` membrane buffer at all otherwise
    (unless ``return_membrane``)."""
    keep_u = return_membrane or (torch.is_grad_enabled() and x.requires_grad)
    op = torch.ops.tdbn.lif_triton_forward if backend == "triton" else torch.ops.tdbn.lif_forward
    spikes, u = op(x, p.tau, p.v_th, p.surrogate_width, p.surrogate, keep_u)
    return (spikes, u.detach()) if return_membrane else spikes


# ---------------------------------------------------------------------------------------------------------
# conv -> tdBN -> LIF


def _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, group, kernels):
    native = kernels.compiled_tdbn
    with _no_autocast(z.device):
        z = _dense_low_precision(z, native)
        layout = _unit_layout(z, native)
        if layout is not None:  # tdBN output and LIF in one pass over z: no float [T, ...] temporary at all
            (stats,) = _synced([z], layout, group)
            affine, mean, invstd, var = _stats(z, layout, weight, bias, scale, eps, stats)
            return _native.unit_forward(z, affine, None, None, layout, tau, v_th), mean, invstd, var
        zc = _wide(z)
        (stats,) = _synced([zc], _native.bn_layout(zc) if native else None, group)
        y, mean, invstd, var = _bn_forward(zc, weight, bias, scale, eps, native, stats)
        del zc  # a float32 copy of a low-precision z is freed here
        parts = [y]
        del y
        return _spikes_of(parts, tau, v_th, kernels, z.dtype), mean, invstd, var


@custom_op("tdbn::td_bn_lif_forward", mutates_args=())
def _td_bn_lif_forward_op(z: Tensor, weight: Tensor | None, bias: Tensor | None, scale: float, eps: float,
                          tau: float, v_th: float, width: float, surrogate: str,
                          group: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reference. Returns ``(spikes, mean, invstd, running_var)``, the statistics per channel in the compute
    dtype; ``group``: the process group whose batches the statistics span (``""``: this process's own)."""
    return _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, group, _reference_kernels())


@_td_bn_lif_forward_op.register_kernel("cpu")
def _(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group):
    return _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, group, _cpu_kernels())


@_td_bn_lif_forward_op.register_kernel("cuda")
def _(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group):
    return _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, group, _cuda_kernels())


def _stats_like(z: Tensor, C: int) -> Tensor:
    return z.new_empty(C, dtype=_compute_dtype(z.dtype))


@_td_bn_lif_forward_op.register_fake
def _(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group):
    C = z.shape[2]
    return torch.empty_like(z), _stats_like(z, C), _stats_like(z, C), _stats_like(z, C)


def _lif_bptt_from(y: Tensor, grad_spikes: Tensor, tau, v_th, width, surrogate, kernels) -> Tensor:
    """``dL/dy`` of ``spikes = LIF(y)`` for a fresh ``y`` (overwritten: first by ``u``, then by the gradient)."""
    kernels.integrate(y, y, tau, v_th)  # -> membrane potentials, in place
    return kernels.bptt(_matching(y, grad_spikes), y, tau, v_th, width, surrogate, reuse_u=True)


def _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                             group, kernels):
    native = kernels.compiled_tdbn
    with _no_autocast(z.device):
        z_dtype, z = z.dtype, _dense_low_precision(z, native)
        gs = _matching(z, grad_spikes)
        layout = _unit_layout(z, native, gs)
        if layout is not None:  # one pass over z (in its own dtype): recompute y and u per block, BPTT, sums
            affine = _affine(weight, bias, mean, invstd, scale)
            grad_y, sums = _native.unit_backward(gs, z, affine, None, None, layout, tau, v_th, width, surrogate,
                                                 sums=True, wide=bool(group))
            del gs  # temporaries go as soon as they are used: the low-precision step's peak counts them
            if group:
                (sums,) = _synced_grad_sums([sums], z.numel() // z.shape[2], group, grad_y.dtype)
            return _bn_backward(grad_y, z, weight, mean, invstd, scale, native, sums, into=grad_y)  # z's dtype
        zc = _wide(z)
        gs = _matching(zc, gs)
        y = _bn_recompute(zc, weight, bias, mean, invstd, scale, native)
        grad_y = _lif_bptt_from(y, gs, tau, v_th, width, surrogate, kernels)
        del y, gs
        sums = None
        if group:
            (sums,) = _synced_grad_sums([_grad_sums(grad_y, zc, mean, native)], zc.numel() // zc.shape[2], group,
                                        grad_y.dtype)
        grad_z, grad_w, grad_b = _bn_backward(grad_y, zc, weight, mean, invstd, scale, native, sums)
        del grad_y, zc
        return (grad_z if grad_z.dtype == z_dtype else grad_z.to(z_dtype)), grad_w, grad_b


@custom_op("tdbn::td_bn_lif_backward", mutates_args=())
def _td_bn_lif_backward_op(grad_spikes: Tensor, z: Tensor, weight: Tensor | None, bias: Tensor | None,
                           mean: Tensor, invstd: Tensor, scale: float, tau: float, v_th: float, width: float,
                           surrogate: str, group: str) -> tuple[Tensor, Tensor, Tensor]:
    """Reference. Returns ``(dL/dz, dL/dlambda, dL/dbeta)``; the tdBN backward sums are added over ``group``."""
    return _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                                    group, _reference_kernels())


@_td_bn_lif_backward_op.register_kernel("cpu")
def _(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate, group):
    return _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                                    group, _cpu_kernels())


@_td_bn_lif_backward_op.register_kernel("cuda")
def _(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate, group):
    return _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                                    group, _cuda_kernels())


@_td_bn_lif_backward_op.register_fake
def _(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate, group):
    return torch.empty_like(z), mean.new_empty(z.shape[2]), mean.new_empty(z.shape[2])


def _td_bn_lif_setup(ctx, inputs, output):
    z, weight, bias, ctx.scale, _, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, ctx.group = inputs
    _, mean, invstd, _ = output
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.save_for_backward(z, weight, bias, mean, invstd)


def _td_bn_lif_grad(ctx, grad_spikes, *_stats_grads):
    z, weight, bias, mean, invstd = ctx.saved_tensors
    grad_z, grad_w, grad_b = torch.ops.tdbn.td_bn_lif_backward(
        grad_spikes, z, weight, bias, mean, invstd, ctx.scale, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, ctx.group
    )
    return (grad_z, grad_w.to(weight.dtype) if ctx.has_weight else None,
            grad_b.to(bias.dtype) if ctx.has_bias else None) + (None,) * 7


_td_bn_lif_forward_op.register_autograd(_td_bn_lif_grad, setup_context=_td_bn_lif_setup)


def td_bn_lif(z: Tensor, norm: NormArgs, p: LIFParameters) -> Tensor:
    """``LIF(tdBN(z))`` in training mode as one unit (Eq. 1-3, 5-8; backward Eq. 14-18): the spikes, in ``z``'s
    dtype. Stores ``z`` and per-channel statistics only; see the module docstring for storage and rounding.

    Args:
        z: the conv/fc output ``[T, N, C, ...]`` (floating point; bfloat16/float16 under autocast).
        norm: the tdBN's parameters and running statistics (:meth:`tdbn.TdBatchNorm2d.unit_args`).
        p: the neuron's parameters.

    Example:
        >>> bn = tdbn.TdBatchNorm1d(3)
        >>> z = torch.randn(4, 2, 3, requires_grad=True)
        >>> s = td_bn_lif(z, bn.unit_args(z), tdbn.LIFParameters())
        >>> bool(((s == 0) | (s == 1)).all()), s.shape
        (True, torch.Size([4, 2, 3]))
    """
    _check_unit_input(z, "td_bn_lif")
    spikes, mean, _, running_var = torch.ops.tdbn.td_bn_lif_forward(
        z, norm.weight, norm.bias, norm.scale, norm.eps, p.tau, p.v_th, p.surrogate_width, p.surrogate, norm.group
    )
    _update_running(norm, mean, running_var)
    return spikes


def _check_unit_input(z: Tensor, name: str) -> None:
    if z.dim() < 3 or not z.is_floating_point():
        raise ValueError(f"{name} expects a floating-point time-first tensor [T, N, C, ...], got shape "
                         f"{tuple(z.shape)} and dtype {z.dtype}")
    if z.numel() == z.shape[2]:  # the check F.batch_norm makes in training mode
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(z.shape)}")


# ---------------------------------------------------------------------------------------------------------
# the residual junction: LIF(tdBN_a(za) + tdBN_b(zb)) or LIF(tdBN_a(za) + zb)


def _junction_forward_impl(za, a, zb, b, eps, tau, v_th, group, kernels):
    """``a``/``b``: ``(weight, bias, scale)``; ``b`` None for an unnormalized ``zb``. Returns the spikes and the
    statistics ``(mean, invstd, running_var)`` of each branch (empty for an unnormalized zb); the statistics of
    both tdBNs span the processes of ``group`` (one all-reduce) when it is not empty."""
    native = kernels.compiled_tdbn
    with _no_autocast(za.device):
        layout = _unit_layout(za, native, zb)
        if layout is not None:  # both tdBNs, the sum and the LIF in one pass: no float [T, ...] temporary
            stats = _synced([za] if b is None else [za, zb], layout, group)
            affine_a, mean_a, invstd_a, var_a = _stats(za, layout, *a, eps, stats[0])
            if b is not None:
                affine_b, mean_b, invstd_b, var_b = _stats(zb, layout, *b, eps, stats[1])
            else:
                affine_b, mean_b, invstd_b, var_b = None, mean_a.new_empty(0), mean_a.new_empty(0), mean_a.new_empty(0)
            spikes = _native.unit_forward(za, affine_a, zb, affine_b, layout, tau, v_th)
            return spikes, mean_a, invstd_a, var_a, mean_b, invstd_b, var_b
        zac, zbc = _wide(za), _wide(zb)
        stats = _synced([zac] if b is None else [zac, zbc], _native.bn_layout(zac) if native else None, group)
        ya, mean_a, invstd_a, var_a = _bn_forward(zac, *a, eps, native, stats[0])
        del zac
        if b is not None:
            yb, mean_b, invstd_b, var_b = _bn_forward(zbc, *b, eps, native, stats[1])
            del zbc
        else:
            yb = zbc
            mean_b, invstd_b, var_b = ya.new_empty(0), ya.new_empty(0), ya.new_empty(0)
        ya.add_(yb)  # the sum of Fig. 5b: the same kernel and operand order as ``ya + yb``
        del yb
        parts = [ya]
        del ya
        spikes = _spikes_of(parts, tau, v_th, kernels, za.dtype)
        return spikes, mean_a, invstd_a, var_a, mean_b, invstd_b, var_b


@custom_op("tdbn::td_bn_add_lif_forward", mutates_args=())
def _td_bn_add_lif_forward_op(
    za: Tensor, weight_a: Tensor | None, bias_a: Tensor | None, scale_a: float, zb: Tensor, zb_mask: Tensor | None,
    normalized_b: bool, weight_b: Tensor | None, bias_b: Tensor | None, scale_b: float, eps: float, tau: float,
    v_th: float, width: float, surrogate: str, group: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference. Returns ``(spikes, mean_a, invstd_a, running_var_a, mean_b, invstd_b, running_var_b)``."""
    b = (weight_b, bias_b, scale_b) if normalized_b else None
    return _junction_forward_impl(za, (weight_a, bias_a, scale_a), zb, b, eps, tau, v_th, group,
                                  _reference_kernels())


def _junction_kernel(kernels):
    def impl(za, weight_a, bias_a, scale_a, zb, zb_mask, normalized_b, weight_b, bias_b, scale_b, eps, tau, v_th,
             width, surrogate, group):
        b = (weight_b, bias_b, scale_b) if normalized_b else None
        return _junction_forward_impl(za, (weight_a, bias_a, scale_a), zb, b, eps, tau, v_th, group, kernels())
    return impl


_td_bn_add_lif_forward_op.register_kernel("cpu")(_junction_kernel(_cpu_kernels))
_td_bn_add_lif_forward_op.register_kernel("cuda")(_junction_kernel(_cuda_kernels))


@_td_bn_add_lif_forward_op.register_fake
def _(za, weight_a, bias_a, scale_a, zb, zb_mask, normalized_b, weight_b, bias_b, scale_b, eps, tau, v_th, width,
      surrogate, group):
    Ca, Cb = za.shape[2], (za.shape[2] if normalized_b else 0)  # zb may be bits; its shape is za's
    return (torch.empty_like(za), _stats_like(za, Ca), _stats_like(za, Ca), _stats_like(za, Ca),
            _stats_like(za, Cb), _stats_like(za, Cb), _stats_like(za, Cb))


def _junction_backward_impl(grad_spikes, za, a, zb, b, tau, v_th, width, surrogate, group, kernels,
                            zb_private=False):
    """``a``/``b``: ``(weight, mean, invstd, scale)`` plus bias; returns the six gradients (empty where none).
    ``zb_private``: ``zb`` is this call's own temporary (the spikes read back from their bits), free to be
    overwritten once the LIF backward pass has read it. ``group``: the tdBN backward sums of both branches are
    added over its processes in one all-reduce."""
    native = kernels.compiled_tdbn
    with _no_autocast(za.device):
        gs = _matching(za, grad_spikes)
        layout = _unit_layout(za, native, zb, gs)
        if layout is not None:  # recompute y and u per block and walk BPTT in one pass over za and zb
            affine_a = _affine(*a)  # a, b: (weight, bias, mean, invstd, scale)
            affine_b = _affine(*b) if b is not None else None
            grad_y, _ = _native.unit_backward(gs, za, affine_a, zb, affine_b, layout, tau, v_th, width, surrogate)
            zac, zbc = za, zb  # the tdBN backward kernels read them in their own dtype
        else:
            zac, zbc = _wide(za), _wide(zb)
            y = _bn_recompute(zac, *a, native)
            y.add_(_bn_recompute(zbc, *b, native) if b is not None else zbc)
            grad_y = _lif_bptt_from(y, _matching(zac, gs), tau, v_th, width, surrogate, kernels)
        del gs
        wa, _, mean_a, invstd_a, scale_a = a
        sums = [None, None]
        if group:
            own = [_grad_sums(grad_y, zac, mean_a, native)]
            if b is not None:
                own.append(_grad_sums(grad_y, zbc, b[2], native))
            synced = _synced_grad_sums(own, za.numel() // za.shape[2], group, grad_y.dtype)
            sums[:len(synced)] = synced
        if b is None:  # dL/dza may go into the spikes read back from the bits: nothing reads them any more
            spare = zb if zb_private and layout is not None else None
            del zb, zbc
            grad_za, grad_wa, grad_ba = _bn_backward(grad_y, zac, wa, mean_a, invstd_a, scale_a, native, sums[0],
                                                     into=spare)
            return grad_za.to(za.dtype), grad_wa, grad_ba, grad_y, grad_y.new_empty(0), grad_y.new_empty(0)
        grad_za, grad_wa, grad_ba = _bn_backward(grad_y, zac, wa, mean_a, invstd_a, scale_a, native, sums[0])
        wb, _, mean_b, invstd_b, scale_b = b
        grad_zb, grad_wb, grad_bb = _bn_backward(grad_y, zbc, wb, mean_b, invstd_b, scale_b, native, sums[1],
                                                 into=grad_y)
        return grad_za.to(za.dtype), grad_wa, grad_ba, grad_zb, grad_wb, grad_bb


def _junction_backward(kernels):
    def impl(grad_spikes, za, weight_a, bias_a, mean_a, invstd_a, scale_a, zb, zb_dtype, normalized_b, weight_b,
             bias_b, mean_b, invstd_b, scale_b, tau, v_th, width, surrogate, group):
        a = (weight_a, bias_a, mean_a, invstd_a, scale_a)
        b = (weight_b, bias_b, mean_b, invstd_b, scale_b) if normalized_b else None
        private = zb.dtype == torch.uint8
        if private:  # a spike input kept as its bits (read back contiguous)
            zb = unpack_spikes(zb, tuple(za.shape), zb_dtype)
            if zb.stride() != za.stride():  # channels-last: the one-pass kernels read both in one layout
                zb = torch.empty_like(za, dtype=zb_dtype).copy_(zb)
        g = _junction_backward_impl(grad_spikes, za, a, zb, b, tau, v_th, width, surrogate, group, kernels(),
                                    zb_private=private)
        return g[:3] + (g[3].to(zb_dtype),) + g[4:]
    return impl


@custom_op("tdbn::td_bn_add_lif_backward", mutates_args=())
def _td_bn_add_lif_backward_op(
    grad_spikes: Tensor, za: Tensor, weight_a: Tensor | None, bias_a: Tensor | None, mean_a: Tensor,
    invstd_a: Tensor, scale_a: float, zb: Tensor, zb_dtype: torch.dtype, normalized_b: bool,
    weight_b: Tensor | None, bias_b: Tensor | None, mean_b: Tensor, invstd_b: Tensor, scale_b: float, tau: float,
    v_th: float, width: float, surrogate: str, group: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference. ``zb`` may be the bits (:func:`pack_spikes`) of a spike tensor of ``zb_dtype``. Returns
    ``(dL/dza, dL/dlambda_a, dL/dbeta_a, dL/dzb, dL/dlambda_b, dL/dbeta_b)`` (the last two empty for an
    unnormalized zb)."""
    return _junction_backward(_reference_kernels)(
        grad_spikes, za, weight_a, bias_a, mean_a, invstd_a, scale_a, zb, zb_dtype, normalized_b, weight_b, bias_b,
        mean_b, invstd_b, scale_b, tau, v_th, width, surrogate, group)


_td_bn_add_lif_backward_op.register_kernel("cpu")(_junction_backward(_cpu_kernels))
_td_bn_add_lif_backward_op.register_kernel("cuda")(_junction_backward(_cuda_kernels))


@_td_bn_add_lif_backward_op.register_fake
def _(grad_spikes, za, weight_a, bias_a, mean_a, invstd_a, scale_a, zb, zb_dtype, normalized_b, weight_b, bias_b,
      mean_b, invstd_b, scale_b, tau, v_th, width, surrogate, group):
    Ca, Cb = za.shape[2], (za.shape[2] if normalized_b else 0)  # zb may be bits; its shape is za's
    return (torch.empty_like(za), mean_a.new_empty(Ca), mean_a.new_empty(Ca), za.new_empty(za.shape, dtype=zb_dtype),
            mean_a.new_empty(Cb), mean_a.new_empty(Cb))


def _junction_setup(ctx, inputs, output):
    za, wa, ba, ctx.scale_a, zb, zb_mask, ctx.normalized_b, wb, bb, ctx.scale_b, _, ctx.tau, ctx.v_th, ctx.width, \
        ctx.surrogate, ctx.group = inputs
    ctx.zb_dtype = zb.dtype
    ctx.flags = (wa is not None, ba is not None, wb is not None, bb is not None)
    _, mean_a, invstd_a, _, mean_b, invstd_b, _ = output
    # a spike input (identity shortcut) is kept as its bits: 1 bit per value
    ctx.save_for_backward(za, wa, ba, mean_a, invstd_a, zb if zb_mask is None else zb_mask, wb, bb, mean_b, invstd_b)


def _junction_grad(ctx, grad_spikes, *_stats_grads):
    za, wa, ba, mean_a, invstd_a, zb, wb, bb, mean_b, invstd_b = ctx.saved_tensors
    g = torch.ops.tdbn.td_bn_add_lif_backward(
        grad_spikes, za, wa, ba, mean_a, invstd_a, ctx.scale_a, zb, ctx.zb_dtype, ctx.normalized_b, wb, bb, mean_b,
        invstd_b, ctx.scale_b, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, ctx.group,
    )
    has_wa, has_ba, has_wb, has_bb = ctx.flags
    nb = ctx.normalized_b
    return (g[0], g[1].to(wa.dtype) if has_wa else None, g[2].to(ba.dtype) if has_ba else None, None, g[3], None,
            None, g[4].to(wb.dtype) if nb and has_wb else None, g[5].to(bb.dtype) if nb and has_bb else None,
            None, None, None, None, None, None, None)


_td_bn_add_lif_forward_op.register_autograd(_junction_grad, setup_context=_junction_setup)


def td_bn_add_lif(za: Tensor, norm_a: NormArgs, zb: Tensor, norm_b: NormArgs | None, p: LIFParameters, *,
                  zb_mask: Tensor | None = None) -> Tensor:
    """The residual junction of Fig. 5b as one unit: ``LIF(tdBN_a(za) + tdBN_b(zb))``, or ``LIF(tdBN_a(za) + zb)``
    when ``norm_b`` is None. Spikes in ``za``'s dtype.

    Args:
        za: the residual branch's last conv output ``[T, N, C, ...]``.
        norm_a: its tdBN (alpha = 1/sqrt(2) in the paper's blocks).
        zb: the shortcut: a projection conv output, or the block's input spikes for an identity shortcut.
        norm_b: the shortcut's tdBN, or None.
        p: the neuron's parameters.
        zb_mask: ``pack_spikes(zb)`` when ``zb`` holds only 0/1 (spikes); the unit then stores these bits instead
            of ``zb``. The caller vouches for the 0/1 values.

    Example:
        >>> bn_a, bn_b = tdbn.TdBatchNorm1d(3), tdbn.TdBatchNorm1d(3)
        >>> za, zb = torch.randn(4, 2, 3, requires_grad=True), torch.randn(4, 2, 3, requires_grad=True)
        >>> s = td_bn_add_lif(za, bn_a.unit_args(za), zb, bn_b.unit_args(zb), tdbn.LIFParameters())
        >>> s.sum().backward(); za.grad.shape == zb.grad.shape == s.shape
        True
    """
    _check_unit_input(za, "td_bn_add_lif")
    if zb.shape != za.shape:
        raise ValueError(f"td_bn_add_lif: the two branches must have one shape, got {tuple(za.shape)} and "
                         f"{tuple(zb.shape)}")
    if norm_b is not None and norm_a.eps != norm_b.eps:
        raise ValueError("td_bn_add_lif: the two tdBNs must share eps")
    if norm_b is not None and norm_a.group != norm_b.group:
        raise ValueError(f"td_bn_add_lif: the two tdBNs must synchronize over one process group, got "
                         f"{norm_a.group!r} and {norm_b.group!r} (convert_sync_tdbn the whole model at once)")
    wb, bb, sb = (norm_b.weight, norm_b.bias, norm_b.scale) if norm_b is not None else (None, None, 1.0)
    spikes, mean_a, _, var_a, mean_b, _, var_b = torch.ops.tdbn.td_bn_add_lif_forward(
        za, norm_a.weight, norm_a.bias, norm_a.scale, zb, zb_mask, norm_b is not None, wb, bb, sb, norm_a.eps,
        p.tau, p.v_th, p.surrogate_width, p.surrogate, norm_a.group,
    )
    _update_running(norm_a, mean_a, var_a)
    if norm_b is not None:
        _update_running(norm_b, mean_b, var_b)
    return spikes


# ---------------------------------------------------------------------------------------------------------
# a conv over spikes


def _pack_reference(x: Tensor) -> Tensor:
    flat = (x != 0).reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=x.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(1, dtype=torch.uint8)


def _unpack_reference(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    n = math.prod(shape)
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits[:, None] >> shifts) & 1).reshape(-1)[:n].view(shape).to(dtype)


@custom_op("tdbn::pack_spikes", mutates_args=())
def _pack_spikes_op(x: Tensor) -> Tensor:
    """Reference: ``x != 0`` as bits, 8 per byte (bit j of byte i is element ``8 i + j`` in row-major order)."""
    return _pack_reference(x)


@_pack_spikes_op.register_kernel("cpu")
def _(x):
    bits = _native.pack_bits(x.contiguous())
    return bits if bits is not None else _pack_reference(x)


@_pack_spikes_op.register_fake
def _(x):
    return x.new_empty((x.numel() + 7) // 8, dtype=torch.uint8)


def pack_spikes(x: Tensor) -> Tensor:
    """The bits of a spike tensor (values 0/1; any float dtype or bool): ``ceil(numel / 8)`` bytes, what the units
    store of a spike input for the backward pass. 32 times less than float32, 8 times less than a bool mask."""
    return torch.ops.tdbn.pack_spikes(x.detach())


def unpack_spikes(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_spikes` gave (contiguous)."""
    out = _native.unpack_bits(bits, shape, dtype) if bits.device.type == "cpu" else None
    return out if out is not None else _unpack_reference(bits, shape, dtype)


@custom_op("tdbn::spike_conv2d", mutates_args=())
def _spike_conv2d_op(x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                     padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """``F.conv2d(x, ...)``; the backward pass reads ``x`` back from its bits ``mask`` (``x`` holds only 0/1)."""
    with _no_autocast(x.device):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@_spike_conv2d_op.register_fake
def _(x, mask, weight, bias, stride, padding, dilation, groups):
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _conv2d_input_grad(grad: Tensor, x_shape: list[int], weight: Tensor, stride: list[int], padding: list[int],
                       dilation: list[int], groups: int) -> Tensor:
    """``dL/dx`` of ``conv2d(x, weight)`` from the output gradient and ``x``'s shape alone: the transposed
    convolution, with the output padding that gives back ``x``'s size. The same kernel and values, bit for bit,
    as autograd's ``convolution_backward`` on a stored ``x`` (tested in both memory formats); a stand-in input
    expanded from one element would be made dense inside ATen (a copy of ``x``'s size) and is computed in the
    contiguous format whatever the gradient's."""
    k = weight.shape[2:]
    out = grad.shape[2:]
    output_padding = [x_shape[2 + i] - ((out[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
                      for i in range(2)]
    return F.conv_transpose2d(grad, weight, None, stride, padding, output_padding, groups, dilation)


@custom_op("tdbn::spike_conv2d_backward", mutates_args=())
def _spike_conv2d_backward_op(grad: Tensor, mask: Tensor, x_shape: list[int], weight: Tensor, has_bias: bool,
                              stride: list[int], padding: list[int], dilation: list[int], groups: int,
                              output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """ATen's ``convolution_backward`` (autograd's formula for conv) on the input read back from its bits."""
    with _no_autocast(grad.device):
        bias_sizes = [weight.shape[0]] if has_bias else None
        gx = gw = gb = None
        if output_mask[1] or output_mask[2]:  # weight gradients first, then the input read back is freed
            x = unpack_spikes(mask, tuple(x_shape), weight.dtype)
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
                [False, output_mask[1], output_mask[2]],
            )
            del x
        if output_mask[0]:
            gx = _conv2d_input_grad(grad, x_shape, weight, stride, padding, dilation, groups)
        return tuple(g if g is not None else grad.new_empty(0) for g in (gx, gw, gb))


@_spike_conv2d_backward_op.register_fake
def _(grad, mask, x_shape, weight, has_bias, stride, padding, dilation, groups, output_mask):
    gx = torch.empty(x_shape, dtype=weight.dtype, device=grad.device) if output_mask[0] else grad.new_empty(0)
    gw = torch.empty_like(weight) if output_mask[1] else grad.new_empty(0)
    gb = grad.new_empty(weight.shape[0]) if output_mask[2] else grad.new_empty(0)
    return gx, gw, gb


def _spike_conv_setup(ctx, inputs, output):
    x, mask, weight, bias, ctx.stride, ctx.padding, ctx.dilation, ctx.groups = inputs
    ctx.has_bias = bias is not None
    ctx.x_shape = list(x.shape)
    ctx.save_for_backward(mask, weight)


def _spike_conv_grad(ctx, grad):
    mask, weight = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[3]]
    gx, gw, gb = torch.ops.tdbn.spike_conv2d_backward(grad, mask, ctx.x_shape, weight, ctx.has_bias, ctx.stride,
                                                      ctx.padding, ctx.dilation, ctx.groups, needs)
    return (gx if needs[0] else None, None, gw if needs[1] else None, gb if needs[2] else None, None, None, None,
            None)


_spike_conv2d_op.register_autograd(_spike_conv_grad, setup_context=_spike_conv_setup)


def spike_conv2d(conv: torch.nn.Conv2d, x: Tensor, mask: Tensor) -> Tensor:
    """``conv(x)`` for an input ``x`` ``[B, C, H, W]`` holding only 0/1, with ``mask = pack_spikes(x)``: the same
    values and gradients as ``conv(x)``, but the backward pass keeps the bits (1 bit per value) instead of ``x``. Under autocast, input and weight are cast to the autocast dtype first, as autocast casts a
    conv's operands (spikes stay exact).
    """
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("spike_conv2d supports zero padding given as numbers (the paper's convs)")
    weight, bias = conv.weight, conv.bias
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    elif weight.dtype != x.dtype:
        x = x.to(weight.dtype)
    return torch.ops.tdbn.spike_conv2d(x, mask, weight, bias, list(conv.stride), list(conv.padding),
                                       list(conv.dilation), conv.groups)


__all__ = ["NormArgs", "lif_op", "pack_spikes", "spike_conv2d", "td_bn_add_lif", "td_bn_lif", "unpack_spikes"]
