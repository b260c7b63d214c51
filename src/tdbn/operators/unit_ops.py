"""The LIF and the memory-saving units of training as PyTorch custom operators (``torch.ops.tdbn.*``).

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
- :func:`~tdbn.operators.spike_ops.spike_conv2d` (its own module): a conv whose input holds only 0/1 (spikes)
  stores the input as bits, 8 per byte, instead of 2 or 4 bytes per value, for its weight gradient.

Each operator has one implementation, written once against the entry points every kernel module shares; its
registrations (:func:`tdbn.operators.kernels.on_each_device`) hand it the plain-PyTorch kernels of
:mod:`tdbn.operators.reference` (the default, for every device), the compiled CPU kernels of
:mod:`tdbn.operators.cpu` on the CPU, and the Triton kernels of :mod:`tdbn.operators.cuda_units` on CUDA (when
``triton`` is installed; otherwise the reference, after one warning). Registered with ``register_fake`` and
``register_autograd``, so ``torch.compile(model, fullgraph=True)`` traces them as single nodes (their storage
stays theirs) and ``torch.autograd.graph.saved_tensors_hooks`` (activation checkpointing, CPU offload) sees
exactly what they save.

Synchronized tdBN (sync-BN across processes, the paper's multi-GPU setting): the unit operators take ``group``,
the name of a ``torch.distributed`` process group (``""``: statistics of this process's batch). The operator then
adds the per-channel statistics sums over the group's processes itself, one all-reduce in the forward pass and one
in the backward pass (:mod:`tdbn.operators.batch_norm`), with the same storage and kernels as the local unit.

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

import torch
from torch.library import custom_op

from . import kernels, reference
from .batch_norm import (WIDE, NormArgs, bn_backward, bn_forward, bn_recompute, compute_dtype, grad_sums,
                         kernel_affine, kernel_stats, synced_grad_sums, synced_stats, update_running, wide)
from .kernels import no_autocast, on_each_device
from ..functional.params import LIFParameters

Tensor = torch.Tensor

def _spikes_of(parts: list[Tensor], tau: float, v_th: float, k, dtype: torch.dtype) -> Tensor:
    """Spikes (in ``dtype``) of LIF neurons fed ``y = parts.pop()`` (Eq. 1-3). ``y`` is a temporary, taken out of
    ``parts`` so that it is freed as soon as the spikes exist (the peak of a low-precision step counts it)."""
    y = parts.pop()
    spikes = torch.empty_like(y)
    k.integrate(y, None, tau, v_th, spikes)
    del y
    return spikes if spikes.dtype == dtype else spikes.to(dtype)


def _matching(ref: Tensor, t: Tensor) -> Tensor:
    """``t`` in ``ref``'s dtype and strides (a copy only where they differ)."""
    if t.dtype == ref.dtype and t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)


def _one_pass(k, z: Tensor, *others: Tensor | None) -> bool:
    """Whether the one-pass unit kernels ``k`` (:func:`tdbn.operators.cpu.unit_forward`,
    :func:`tdbn.operators.cuda_units.unit_forward`; none in the reference) index ``z`` in its own dtype (float32,
    float64, or a 16-bit float computed in float32: bfloat16 on the CPU, bfloat16 and float16 on CUDA) and
    ``others`` have its dtype, shape and strides."""
    return k.indexes(z, mixed=True) and not any(
        o is not None and (o.dtype != z.dtype or o.shape != z.shape or o.stride() != z.stride()) for o in others)


def _dense_low_precision(z: Tensor, k) -> Tensor:
    """``z``, or for a bfloat16/float16 ``z`` that the unit kernels cannot index (the encoder's conv output of a
    static image, repeated over time with stride 0) a dense copy in its own dtype: the kernels then read it
    as they read any bfloat16 ``z`` (float32 and float64 keep their path, bit for bit)."""
    if z.dtype in WIDE or z.dtype not in k.COMPUTE or _one_pass(k, z):
        return z
    return z.contiguous()


# ---------------------------------------------------------------------------------------------------------
# LIF (Eq. 1-3, 14-18)


def _lif_forward_impl(x, tau, v_th, width, surrogate, keep_u, k):
    with no_autocast(x.device):
        spikes = torch.empty_like(x)  # keeps a channels-last layout
        if keep_u:
            u = torch.empty_like(spikes)
            k.integrate(x, u, tau, v_th, spikes)
            return spikes, u
        k.integrate(x, None, tau, v_th, spikes)  # no [T, ...] membrane buffer at all
        return spikes, x.new_empty(0)


def _lif_backward_impl(grad_spikes, u, tau, v_th, width, surrogate, k):
    with no_autocast(u.device):
        return k.bptt(_matching(u, grad_spikes), u, tau, v_th, width, surrogate)


def _define_lif_ops(name: str, default):
    """``tdbn::{name}_forward`` / ``tdbn::{name}_backward`` with their fake and autograd registrations; the
    kernels: ``default()`` for every device."""

    @custom_op(f"tdbn::{name}_forward", mutates_args=())
    def forward(x: Tensor, tau: float, v_th: float, width: float, surrogate: str,
                keep_u: bool) -> tuple[Tensor, Tensor]:
        """Spikes and ``u`` of Eq. 1-3; ``u`` is empty unless ``keep_u``."""
        return _lif_forward_impl(x, tau, v_th, width, surrogate, keep_u, default())

    @custom_op(f"tdbn::{name}_backward", mutates_args=())
    def backward(grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str) -> Tensor:
        """``dL/dx`` by the reverse-time recursion of Eq. 14-15, 18 from the stored ``u``."""
        return _lif_backward_impl(grad_spikes, u, tau, v_th, width, surrogate, default())

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
_lif_forward_op, _lif_backward_op = _define_lif_ops("lif", lambda: reference)
on_each_device(_lif_forward_op, _lif_forward_impl)
on_each_device(_lif_backward_op, _lif_backward_impl)
# the Triton kernels on every device, asked for explicitly (LIF(backend="triton"); its interpreter on the CPU)
_define_lif_ops("lif_triton", kernels.for_triton)


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


def _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group, k):
    with no_autocast(z.device):
        z = _dense_low_precision(z, k)
        if _one_pass(k, z):  # tdBN output and LIF in one pass over z: no float [T, ...] temporary at all
            (stats,) = synced_stats([z], k, group)
            affine, mean, invstd, var = kernel_stats(z, k, weight, bias, scale, eps, stats)
            return k.unit_forward(z, affine, None, None, tau, v_th), mean, invstd, var
        zc = wide(z)
        (stats,) = synced_stats([zc], k, group)
        y, mean, invstd, var = bn_forward(zc, weight, bias, scale, eps, k, stats)
        del zc  # a float32 copy of a low-precision z is freed here
        parts = [y]
        del y
        return _spikes_of(parts, tau, v_th, k, z.dtype), mean, invstd, var


@custom_op("tdbn::td_bn_lif_forward", mutates_args=())
def _td_bn_lif_forward_op(z: Tensor, weight: Tensor | None, bias: Tensor | None, scale: float, eps: float,
                          tau: float, v_th: float, width: float, surrogate: str,
                          group: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reference. Returns ``(spikes, mean, invstd, running_var)``, the statistics per channel in the compute
    dtype; ``group``: the process group whose batches the statistics span (``""``: this process's own)."""
    return _td_bn_lif_forward_impl(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group, reference)


on_each_device(_td_bn_lif_forward_op, _td_bn_lif_forward_impl)


def _stats_like(z: Tensor, C: int) -> Tensor:
    return z.new_empty(C, dtype=compute_dtype(z.dtype))


@_td_bn_lif_forward_op.register_fake
def _(z, weight, bias, scale, eps, tau, v_th, width, surrogate, group):
    C = z.shape[2]
    return torch.empty_like(z), _stats_like(z, C), _stats_like(z, C), _stats_like(z, C)


def _lif_bptt_from(y: Tensor, grad_spikes: Tensor, tau, v_th, width, surrogate, k) -> Tensor:
    """``dL/dy`` of ``spikes = LIF(y)`` for a fresh ``y`` (overwritten: first by ``u``, then by the gradient)."""
    k.integrate(y, y, tau, v_th)  # -> membrane potentials, in place
    return k.bptt(_matching(y, grad_spikes), y, tau, v_th, width, surrogate, reuse_u=True)


def _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                             group, k):
    with no_autocast(z.device):
        z_dtype, z = z.dtype, _dense_low_precision(z, k)
        gs = _matching(z, grad_spikes)
        if _one_pass(k, z, gs):  # one pass over z (in its own dtype): recompute y and u per block, BPTT, sums
            affine = kernel_affine(weight, bias, mean, invstd, scale)
            grad_y, sums = k.unit_backward(gs, z, affine, None, None, tau, v_th, width, surrogate, sums=True,
                                           wide=bool(group))
            del gs  # temporaries go as soon as they are used: the low-precision step's peak counts them
            if group:
                (sums,) = synced_grad_sums([sums], z.numel() // z.shape[2], group, grad_y.dtype)
            return bn_backward(grad_y, z, weight, mean, invstd, scale, k, sums, into=grad_y)  # z's dtype
        zc = wide(z)
        gs = _matching(zc, gs)
        y = bn_recompute(zc, weight, bias, mean, invstd, scale, k)
        grad_y = _lif_bptt_from(y, gs, tau, v_th, width, surrogate, k)
        del y, gs
        sums = None
        if group:
            (sums,) = synced_grad_sums([grad_sums(grad_y, zc, mean, k)], zc.numel() // zc.shape[2], group,
                                        grad_y.dtype)
        grad_z, grad_w, grad_b = bn_backward(grad_y, zc, weight, mean, invstd, scale, k, sums)
        del grad_y, zc
        return (grad_z if grad_z.dtype == z_dtype else grad_z.to(z_dtype)), grad_w, grad_b


@custom_op("tdbn::td_bn_lif_backward", mutates_args=())
def _td_bn_lif_backward_op(grad_spikes: Tensor, z: Tensor, weight: Tensor | None, bias: Tensor | None,
                           mean: Tensor, invstd: Tensor, scale: float, tau: float, v_th: float, width: float,
                           surrogate: str, group: str) -> tuple[Tensor, Tensor, Tensor]:
    """Reference. Returns ``(dL/dz, dL/dlambda, dL/dbeta)``; the tdBN backward sums are added over ``group``."""
    return _td_bn_lif_backward_impl(grad_spikes, z, weight, bias, mean, invstd, scale, tau, v_th, width, surrogate,
                                    group, reference)


on_each_device(_td_bn_lif_backward_op, _td_bn_lif_backward_impl)


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
    update_running(norm.running_mean, norm.running_var, norm.momentum, mean, running_var)
    return spikes


def _check_unit_input(z: Tensor, name: str) -> None:
    if z.dim() < 3 or not z.is_floating_point():
        raise ValueError(f"{name} expects a floating-point time-first tensor [T, N, C, ...], got shape "
                         f"{tuple(z.shape)} and dtype {z.dtype}")
    if z.numel() == z.shape[2]:  # the check F.batch_norm makes in training mode
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(z.shape)}")


# ---------------------------------------------------------------------------------------------------------
# the residual junction: LIF(tdBN_a(za) + tdBN_b(zb)) or LIF(tdBN_a(za) + zb)


def _junction_forward_impl(za, a, zb, b, eps, tau, v_th, group, k):
    """``a``/``b``: ``(weight, bias, scale)``; ``b`` None for an unnormalized ``zb``. Returns the spikes and the
    statistics ``(mean, invstd, running_var)`` of each branch (empty for an unnormalized zb); the statistics of
    both tdBNs span the processes of ``group`` (one all-reduce) when it is not empty."""
    with no_autocast(za.device):
        if _one_pass(k, za, zb):  # both tdBNs, the sum and the LIF in one pass: no float [T, ...] temporary
            stats = synced_stats([za] if b is None else [za, zb], k, group)
            affine_a, mean_a, invstd_a, var_a = kernel_stats(za, k, *a, eps, stats[0])
            if b is not None:
                affine_b, mean_b, invstd_b, var_b = kernel_stats(zb, k, *b, eps, stats[1])
            else:
                affine_b, mean_b, invstd_b, var_b = None, mean_a.new_empty(0), mean_a.new_empty(0), mean_a.new_empty(0)
            spikes = k.unit_forward(za, affine_a, zb, affine_b, tau, v_th)
            return spikes, mean_a, invstd_a, var_a, mean_b, invstd_b, var_b
        zac, zbc = wide(za), wide(zb)
        stats = synced_stats([zac] if b is None else [zac, zbc], k, group)
        ya, mean_a, invstd_a, var_a = bn_forward(zac, *a, eps, k, stats[0])
        del zac
        if b is not None:
            yb, mean_b, invstd_b, var_b = bn_forward(zbc, *b, eps, k, stats[1])
            del zbc
        else:
            yb = zbc
            mean_b, invstd_b, var_b = ya.new_empty(0), ya.new_empty(0), ya.new_empty(0)
        ya.add_(yb)  # the sum of Fig. 5b: the same kernel and operand order as ``ya + yb``
        del yb
        parts = [ya]
        del ya
        spikes = _spikes_of(parts, tau, v_th, k, za.dtype)
        return spikes, mean_a, invstd_a, var_a, mean_b, invstd_b, var_b


@custom_op("tdbn::td_bn_add_lif_forward", mutates_args=())
def _td_bn_add_lif_forward_op(
    za: Tensor, weight_a: Tensor | None, bias_a: Tensor | None, scale_a: float, zb: Tensor, zb_mask: Tensor | None,
    normalized_b: bool, weight_b: Tensor | None, bias_b: Tensor | None, scale_b: float, eps: float, tau: float,
    v_th: float, width: float, surrogate: str, group: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference. Returns ``(spikes, mean_a, invstd_a, running_var_a, mean_b, invstd_b, running_var_b)``."""
    return _junction_forward(za, weight_a, bias_a, scale_a, zb, zb_mask, normalized_b, weight_b, bias_b, scale_b, eps,
                             tau, v_th, width, surrogate, group, reference)


def _junction_forward(za, weight_a, bias_a, scale_a, zb, zb_mask, normalized_b, weight_b, bias_b, scale_b, eps, tau,
                      v_th, width, surrogate, group, k):
    b = (weight_b, bias_b, scale_b) if normalized_b else None
    return _junction_forward_impl(za, (weight_a, bias_a, scale_a), zb, b, eps, tau, v_th, group, k)


on_each_device(_td_bn_add_lif_forward_op, _junction_forward)


@_td_bn_add_lif_forward_op.register_fake
def _(za, weight_a, bias_a, scale_a, zb, zb_mask, normalized_b, weight_b, bias_b, scale_b, eps, tau, v_th, width,
      surrogate, group):
    Ca, Cb = za.shape[2], (za.shape[2] if normalized_b else 0)  # zb may be bits; its shape is za's
    return (torch.empty_like(za), _stats_like(za, Ca), _stats_like(za, Ca), _stats_like(za, Ca),
            _stats_like(za, Cb), _stats_like(za, Cb), _stats_like(za, Cb))


def _junction_backward_impl(grad_spikes, za, a, zb, b, tau, v_th, width, surrogate, group, k, zb_private=False):
    """``a``/``b``: ``(weight, mean, invstd, scale)`` plus bias; returns the six gradients (empty where none).
    ``zb_private``: ``zb`` is this call's own temporary (the spikes read back from their bits), free to be
    overwritten once the LIF backward pass has read it. ``group``: the tdBN backward sums of both branches are
    added over its processes in one all-reduce."""
    with no_autocast(za.device):
        gs = _matching(za, grad_spikes)
        one_pass = _one_pass(k, za, zb, gs)
        if one_pass:  # recompute y and u per block and walk BPTT in one pass over za and zb
            affine_a = kernel_affine(*a)  # a, b: (weight, bias, mean, invstd, scale)
            affine_b = kernel_affine(*b) if b is not None else None
            grad_y, _ = k.unit_backward(gs, za, affine_a, zb, affine_b, tau, v_th, width, surrogate)
            zac, zbc = za, zb  # the tdBN backward kernels read them in their own dtype
        else:
            zac, zbc = wide(za), wide(zb)
            y = bn_recompute(zac, *a, k)
            y.add_(bn_recompute(zbc, *b, k) if b is not None else zbc)
            grad_y = _lif_bptt_from(y, _matching(zac, gs), tau, v_th, width, surrogate, k)
        del gs
        wa, _, mean_a, invstd_a, scale_a = a
        sums = [None, None]
        if group:
            own = [grad_sums(grad_y, zac, mean_a, k)]
            if b is not None:
                own.append(grad_sums(grad_y, zbc, b[2], k))
            synced = synced_grad_sums(own, za.numel() // za.shape[2], group, grad_y.dtype)
            sums[:len(synced)] = synced
        if b is None:  # dL/dza may go into the spikes read back from the bits: nothing reads them any more
            spare = zb if zb_private and one_pass else None
            del zb, zbc
            grad_za, grad_wa, grad_ba = bn_backward(grad_y, zac, wa, mean_a, invstd_a, scale_a, k, sums[0], into=spare)
            return grad_za.to(za.dtype), grad_wa, grad_ba, grad_y, grad_y.new_empty(0), grad_y.new_empty(0)
        grad_za, grad_wa, grad_ba = bn_backward(grad_y, zac, wa, mean_a, invstd_a, scale_a, k, sums[0])
        wb, _, mean_b, invstd_b, scale_b = b
        grad_zb, grad_wb, grad_bb = bn_backward(grad_y, zbc, wb, mean_b, invstd_b, scale_b, k, sums[1], into=grad_y)
        return grad_za.to(za.dtype), grad_wa, grad_ba, grad_zb, grad_wb, grad_bb


def _junction_backward(grad_spikes, za, weight_a, bias_a, mean_a, invstd_a, scale_a, zb, zb_dtype, normalized_b,
                       weight_b, bias_b, mean_b, invstd_b, scale_b, tau, v_th, width, surrogate, group, k):
    a = (weight_a, bias_a, mean_a, invstd_a, scale_a)
    b = (weight_b, bias_b, mean_b, invstd_b, scale_b) if normalized_b else None
    private = zb.dtype == torch.uint8
    if private:  # a spike input kept as its bits (read back contiguous)
        zb = k.unpack_bits(zb, tuple(za.shape), zb_dtype)
        if zb.stride() != za.stride():  # channels-last: the one-pass kernels read both in one layout
            zb = torch.empty_like(za, dtype=zb_dtype).copy_(zb)
    g = _junction_backward_impl(grad_spikes, za, a, zb, b, tau, v_th, width, surrogate, group, k,
                                zb_private=private)
    return g[:3] + (g[3].to(zb_dtype),) + g[4:]


@custom_op("tdbn::td_bn_add_lif_backward", mutates_args=())
def _td_bn_add_lif_backward_op(
    grad_spikes: Tensor, za: Tensor, weight_a: Tensor | None, bias_a: Tensor | None, mean_a: Tensor,
    invstd_a: Tensor, scale_a: float, zb: Tensor, zb_dtype: torch.dtype, normalized_b: bool,
    weight_b: Tensor | None, bias_b: Tensor | None, mean_b: Tensor, invstd_b: Tensor, scale_b: float, tau: float,
    v_th: float, width: float, surrogate: str, group: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference. ``zb`` may be the bits (:func:`~tdbn.operators.spike_ops.pack_spikes`) of a spike tensor of
    ``zb_dtype``. Returns ``(dL/dza, dL/dlambda_a, dL/dbeta_a, dL/dzb, dL/dlambda_b, dL/dbeta_b)`` (the last two empty for an
    unnormalized zb)."""
    return _junction_backward(grad_spikes, za, weight_a, bias_a, mean_a, invstd_a, scale_a, zb, zb_dtype, normalized_b,
                              weight_b, bias_b, mean_b, invstd_b, scale_b, tau, v_th, width, surrogate, group, reference)


on_each_device(_td_bn_add_lif_backward_op, _junction_backward)


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
    update_running(norm_a.running_mean, norm_a.running_var, norm_a.momentum, mean_a, var_a)
    if norm_b is not None:
        update_running(norm_b.running_mean, norm_b.running_var, norm_b.momentum, mean_b, var_b)
    return spikes


__all__ = ["NormArgs", "lif_op", "td_bn_add_lif", "td_bn_lif"]
