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

from .batch_norm import (WIDE, NormArgs, bn_backward, bn_forward, bn_recompute, compute_dtype, grad_sums,
                         kernel_affine, kernel_stats, synced_grad_sums, synced_stats, update_running, wide)
from .kernels import no_autocast
from .recursions import step_reference
from .registration import LIFArgs, Operator, TdBN, TdBNBatch
from . import surrogate as _surrogate
from .params import LIFParameters

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


def _with_start(x: Tensor, u0: Tensor, lif: LIFArgs) -> Tensor:
    """``x`` whose first step carries in ``u0``, the potential before it (after the previous step, before its
    reset): ``x[0] + tau * u0 * (1 - o0)``, the recursions' own step, so that the LIF from rest on the result
    equals the LIF continued from ``u0`` bit for bit."""
    first = step_reference(x[0], u0.to(x.dtype), lif.tau, lif.v_th)
    return first.unsqueeze(0) if x.shape[0] == 1 else torch.cat([first.unsqueeze(0), x[1:]])


def _lif_forward(x: Tensor, u0: Tensor | None, lif: LIFArgs, keep_u: bool, k):
    """Spikes and ``u`` of Eq. 1-3 from rest, or continued from the potential ``u0`` ``[N, ...]``; ``u`` is empty
    unless ``keep_u``."""
    with no_autocast(x.device):
        if u0 is not None:
            x = _with_start(x, u0, lif)  # a new tensor
            if keep_u and x.shape[0] == 1:  # one step (a stream's): its potential is that tensor itself
                spikes = torch.empty_like(x)
                k.integrate(x, None, lif.tau, lif.v_th, spikes)
                return spikes, x
        spikes = torch.empty_like(x)  # keeps a channels-last layout
        if keep_u:
            u = torch.empty_like(spikes)
            k.integrate(x, u, lif.tau, lif.v_th, spikes)
            return spikes, u
        k.integrate(x, None, lif.tau, lif.v_th, spikes)  # no [T, ...] membrane buffer at all
        return spikes, x.new_empty(0)


def _lif_backward(grad_spikes: Tensor, u: Tensor, lif: LIFArgs, k):
    """``dL/dx`` by the reverse-time recursion of Eq. 14-15, 18 from the stored ``u``."""
    with no_autocast(u.device):
        return k.bptt(_matching(u, grad_spikes), u, *lif)


def _lif_operators() -> tuple[Operator, Operator]:
    """``tdbn::lif_forward`` / ``_backward`` with their fake and autograd registrations."""
    forward = Operator("lif_forward", _lif_forward, "(Tensor, Tensor)")
    backward = Operator("lif_backward", _lif_backward, "Tensor")
    forward.register_fake(lambda x, u0, lif, keep_u: (torch.empty_like(x), torch.empty_like(x) if keep_u
                                                      else x.new_empty(0)))
    backward.register_fake(lambda grad_spikes, u, lif: torch.empty_like(u))

    def setup(ctx, inputs, output):
        _, u0, ctx.lif, _ = inputs
        ctx.save_for_backward(output[1], *([] if u0 is None else [u0]))  # u0 only where it is given

    def grad(ctx, grad_spikes, _grad_u):
        u, *u0 = ctx.saved_tensors
        grad_x = backward(grad_spikes, u, ctx.lif)
        return grad_x, (_start_grad(grad_x[0], u0[0], ctx.lif) if ctx.needs_input_grad[1] else None), None, None

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


def _start_grad(grad_first: Tensor, u0: Tensor, lif: LIFArgs) -> Tensor:
    """``dL/du0`` from ``dL/du[0]``: the decay and reset paths of Eq. 14-15 one step before the first,
    ``(tau * (1 - o0) - tau * u0 * sg(u0 - v_th)) * dL/du[0]``."""
    tau, v_th, width, surrogate = lif
    u0 = u0.to(grad_first.dtype)
    sg = _surrogate.get(surrogate)(u0 - v_th, width)
    return ((u0 <= v_th).to(u0.dtype) * tau - tau * u0 * sg) * grad_first


# the LIF on the device's kernels: the reference loops, the compiled loops on the CPU, Triton on CUDA
lif_forward, lif_backward = _lif_operators()


# One step from rest with the rectangle surrogate (Eq. 16): the backward pass needs only where ``u = x`` lies in the
# surrogate's window ``|u - v_th| < a/2``, one bit per value instead of ``u``. The forward pass evaluates that test
# in ``x``'s dtype, as the kernels' surrogate does (tests/operators/test_operators_lif_window.py holds them to the
# same bits, window edges included); the backward pass multiplies by ``1/a`` inside the window (float32, float64)
# or runs the device's own LIF kernel on a stand-in ``u`` (``v_th`` inside the window, far outside it elsewhere),
# whose surrogate is the same ``1/a`` or 0 as the stored ``u``'s: the same input gradient, bit for bit.


def _lif_window_forward(x: Tensor, lif: LIFArgs, k):
    """Spikes of a one-step LIF from rest and the bits of its surrogate window (rectangle surrogate only)."""
    with no_autocast(x.device):
        spikes = torch.empty_like(x)
        k.integrate(x, None, lif.tau, lif.v_th, spikes)
        window = (x - lif.v_th).abs_() < 0.5 * lif.width
        return spikes, k.pack_bits(window.contiguous())


def _window_stand_in(bits: Tensor, shape: list[int], dtype: torch.dtype, lif: LIFArgs, k) -> Tensor:
    """A ``u`` whose rectangle surrogate is ``1/a`` where ``bits`` say the window and 0 elsewhere."""
    far = lif.v_th + 4.0 * max(lif.width, abs(lif.v_th))  # outside the window after any rounding to dtype
    inside = k.unpack_bits(bits, tuple(shape), dtype)  # 1 inside, 0 outside
    return inside.mul_(lif.v_th - far).add_(far)  # far - (far - v_th) inside: v_th up to rounding, well inside


def _lif_window_backward(grad_spikes: Tensor, bits: Tensor, shape: list[int], dtype: torch.dtype, lif: LIFArgs, k):
    """``dL/dx`` of :func:`_lif_window_forward` from the window's bits: ``dL/do * 1/a`` inside the window, 0
    outside; in float32 and float64 two in-place products (the kernels' ``dL/do * sg`` with ``sg = 1/a``, the same
    rounding), in other dtypes the device's LIF kernel on a stand-in ``u``."""
    with no_autocast(bits.device):
        if dtype in (torch.float32, torch.float64):
            window = k.unpack_bits(bits, tuple(shape), dtype)
            return window.mul_(1.0 / lif.width).mul_(_matching(window, grad_spikes))
        u = _window_stand_in(bits, shape, dtype, lif, k)
        return k.bptt(_matching(u, grad_spikes), u, *lif)


def _lif_window_operators() -> tuple[Operator, Operator]:
    """``tdbn::lif_window_forward`` / ``_backward`` with their fake and autograd registrations."""
    forward = Operator("lif_window_forward", _lif_window_forward, "(Tensor, Tensor)")
    backward = Operator("lif_window_backward", _lif_window_backward, "Tensor")
    forward.register_fake(lambda x, lif: (torch.empty_like(x),
                                          x.new_empty((x.numel() + 7) // 8, dtype=torch.uint8)))
    backward.register_fake(lambda grad_spikes, bits, shape, dtype, lif: grad_spikes.new_empty(shape, dtype=dtype))

    def setup(ctx, inputs, output):
        x, ctx.lif = inputs
        ctx.shape, ctx.dtype = list(x.shape), x.dtype
        ctx.save_for_backward(output[1])

    def grad(ctx, grad_spikes, _grad_bits):
        bits, = ctx.saved_tensors
        return backward(grad_spikes, bits, ctx.shape, ctx.dtype, ctx.lif), None

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


lif_window_forward, lif_window_backward = _lif_window_operators()


def lif_op(x: Tensor, p: LIFParameters, *, u0: Tensor | None = None, return_membrane: bool = False):
    """Spikes (and ``u``, detached) of :func:`tdbn.functional.lif` through ``torch.ops.tdbn.lif_forward`` (the
    device's kernels); from rest, or continued from ``u0``. The operator stores ``u`` for the backward pass when
    ``x`` or ``u0`` needs a gradient, and no ``[T, ...]`` membrane buffer at all otherwise (unless
    ``return_membrane``); one step from rest with the rectangle surrogate stores the bits of the surrogate's window
    instead (``torch.ops.tdbn.lif_window_forward``)."""
    needs_grad = x.requires_grad or (u0 is not None and u0.requires_grad)
    keep_u = return_membrane or (torch.is_grad_enabled() and needs_grad)
    if keep_u and not return_membrane and u0 is None and x.shape[0] == 1 and p.surrogate == "rectangle":
        return lif_window_forward(x, LIFArgs.of(p))[0]  # stores 1 bit per value, not u
    spikes, u = lif_forward(x, u0, LIFArgs.of(p), keep_u)
    return (spikes, u.detach()) if return_membrane else spikes


# ---------------------------------------------------------------------------------------------------------
# conv -> tdBN -> LIF


def _td_bn_lif_forward(z: Tensor, bn: TdBN, eps: float, lif: LIFArgs, group: str, k):
    """``(spikes, mean, invstd, running_var)``, the statistics per channel in the compute dtype; ``group``: the
    process group whose batches the statistics span (``""``: this process's own)."""
    with no_autocast(z.device):
        z = _dense_low_precision(z, k)
        if _one_pass(k, z):  # tdBN output and LIF in one pass over z: no float [T, ...] temporary at all
            (stats,) = synced_stats([z], k, group)
            affine, mean, invstd, var = kernel_stats(z, k, *bn, eps, stats)
            return k.unit_forward(z, affine, None, None, lif.tau, lif.v_th), mean, invstd, var
        zc = wide(z)
        (stats,) = synced_stats([zc], k, group)
        y, mean, invstd, var = bn_forward(zc, *bn, eps, k, stats)
        del zc  # a float32 copy of a low-precision z is freed here
        parts = [y]
        del y
        return _spikes_of(parts, lif.tau, lif.v_th, k, z.dtype), mean, invstd, var


def _lif_bptt_from(y: Tensor, grad_spikes: Tensor, lif: LIFArgs, k) -> Tensor:
    """``dL/dy`` of ``spikes = LIF(y)`` for a fresh ``y`` (overwritten: first by ``u``, then by the gradient)."""
    k.integrate(y, y, lif.tau, lif.v_th)  # -> membrane potentials, in place
    return k.bptt(_matching(y, grad_spikes), y, *lif, reuse_u=True)


def _affine_lif_backward(grad_spikes: Tensor, z: Tensor, scale: Tensor, shift: Tensor, z2: Tensor | None,
                         scale2: Tensor | None, shift2: Tensor | None, lif: LIFArgs, k) -> Tensor:
    """``dL/dy`` of ``spikes = LIF(y)`` with ``y = scale * z + shift`` (``scale``, ``shift`` broadcast against ``z``:
    per step and channel), plus ``scale2 * z2 + shift2`` (a residual junction's second branch; ``z2`` alone when
    ``scale2`` is None), in one buffer: ``y``, then ``u``, then the gradient. The backward of the units whose
    normalization is a per-step affine map (:class:`tdbn.layers.temporal_norm.TEBN`, ``BNTT``, ``TAB``)."""
    with no_autocast(z.device):
        y = torch.addcmul(shift, z, scale)
        if z2 is not None:
            if scale2 is None:
                y.add_(z2)
            else:
                y.addcmul_(z2, scale2).add_(shift2)
        return _lif_bptt_from(y, grad_spikes, lif, k)


def _td_bn_lif_backward(grad_spikes: Tensor, z: Tensor, bn: TdBNBatch, lif: LIFArgs, group: str, k):
    """``(dL/dz, dL/dlambda, dL/dbeta)``; the tdBN backward sums are added over ``group``."""
    weight, _, mean, invstd, scale = bn
    with no_autocast(z.device):
        z_dtype, z = z.dtype, _dense_low_precision(z, k)
        gs = _matching(z, grad_spikes)
        if _one_pass(k, z, gs):  # one pass over z (in its own dtype): recompute y and u per block, BPTT, sums
            affine = kernel_affine(*bn)
            grad_y, sums = k.unit_backward(gs, z, affine, None, None, *lif, sums=True, wide=bool(group))
            del gs  # temporaries go as soon as they are used: the low-precision step's peak counts them
            if group:
                (sums,) = synced_grad_sums([sums], z.numel() // z.shape[2], group, grad_y.dtype)
            return bn_backward(grad_y, z, weight, mean, invstd, scale, k, sums, into=grad_y)  # z's dtype
        zc = wide(z)
        gs = _matching(zc, gs)
        y = bn_recompute(zc, *bn, k)
        grad_y = _lif_bptt_from(y, gs, lif, k)
        del y, gs
        sums = None
        if group:
            (sums,) = synced_grad_sums([grad_sums(grad_y, zc, mean, k)], zc.numel() // zc.shape[2], group,
                                        grad_y.dtype)
        grad_z, grad_w, grad_b = bn_backward(grad_y, zc, weight, mean, invstd, scale, k, sums)
        del grad_y, zc
        return (grad_z if grad_z.dtype == z_dtype else grad_z.to(z_dtype)), grad_w, grad_b


td_bn_lif_forward = Operator("td_bn_lif_forward", _td_bn_lif_forward, "(Tensor, Tensor, Tensor, Tensor)")
affine_lif_backward = Operator("affine_lif_backward", _affine_lif_backward, "Tensor")
affine_lif_backward.register_fake(lambda grad_spikes, z, scale, shift, z2, scale2, shift2, lif: torch.empty_like(z))
td_bn_lif_backward = Operator("td_bn_lif_backward", _td_bn_lif_backward, "(Tensor, Tensor, Tensor)")


def _stats_like(z: Tensor, C: int) -> Tensor:
    return z.new_empty(C, dtype=compute_dtype(z.dtype))


@td_bn_lif_forward.register_fake
def _(z, bn, eps, lif, group):
    C = z.shape[2]
    return torch.empty_like(z), _stats_like(z, C), _stats_like(z, C), _stats_like(z, C)


@td_bn_lif_backward.register_fake
def _(grad_spikes, z, bn, lif, group):
    return torch.empty_like(z), bn.mean.new_empty(z.shape[2]), bn.mean.new_empty(z.shape[2])


def _td_bn_lif_setup(ctx, inputs, output):
    z, bn, _, ctx.lif, ctx.group = inputs
    _, mean, invstd, _ = output
    ctx.scale = bn.scale
    ctx.save_for_backward(z, bn.weight, bn.bias, mean, invstd)


def _td_bn_lif_grad(ctx, grad_spikes, *_stats_grads):
    z, weight, bias, mean, invstd = ctx.saved_tensors
    grad_z, grad_w, grad_b = td_bn_lif_backward(grad_spikes, z, TdBNBatch(weight, bias, mean, invstd, ctx.scale),
                                                ctx.lif, ctx.group)
    return grad_z, _param_grads(weight, bias, grad_w, grad_b), None, None, None


td_bn_lif_forward.register_autograd(_td_bn_lif_grad, setup_context=_td_bn_lif_setup)


def _param_grads(weight: Tensor | None, bias: Tensor | None, grad_w: Tensor, grad_b: Tensor) -> TdBN:
    """A tdBN's gradients, each in its parameter's dtype (None where the parameter is absent)."""
    return TdBN(None if weight is None else grad_w.to(weight.dtype), None if bias is None else grad_b.to(bias.dtype),
                None)


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
    spikes, mean, _, running_var = td_bn_lif_forward(z, norm.tdbn(), norm.eps, LIFArgs.of(p), norm.group)
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


def _junction_forward(za: Tensor, a: TdBN, zb: Tensor, zb_mask: Tensor | None, normalized_b: bool, b: TdBN,
                      eps: float, lif: LIFArgs, group: str, k):
    """``(spikes, mean_a, invstd_a, running_var_a, mean_b, invstd_b, running_var_b)``; ``b`` applies where
    ``normalized_b`` (the statistics of an unnormalized ``zb`` are empty). The statistics of both tdBNs span the
    processes of ``group`` (one all-reduce) when it is not empty; ``zb_mask`` is what autograd stores of ``zb``."""
    b = b if normalized_b else None
    with no_autocast(za.device):
        if _one_pass(k, za, zb):  # both tdBNs, the sum and the LIF in one pass: no float [T, ...] temporary
            stats = synced_stats([za] if b is None else [za, zb], k, group)
            affine_a, mean_a, invstd_a, var_a = kernel_stats(za, k, *a, eps, stats[0])
            if b is not None:
                affine_b, mean_b, invstd_b, var_b = kernel_stats(zb, k, *b, eps, stats[1])
            else:
                affine_b, mean_b, invstd_b, var_b = None, mean_a.new_empty(0), mean_a.new_empty(0), mean_a.new_empty(0)
            spikes = k.unit_forward(za, affine_a, zb, affine_b, lif.tau, lif.v_th)
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
        spikes = _spikes_of(parts, lif.tau, lif.v_th, k, za.dtype)
        return spikes, mean_a, invstd_a, var_a, mean_b, invstd_b, var_b


def _junction_backward(grad_spikes: Tensor, za: Tensor, a: TdBNBatch, zb: Tensor, zb_dtype: torch.dtype,
                       normalized_b: bool, b: TdBNBatch, lif: LIFArgs, group: str, k):
    """``(dL/dza, dL/dlambda_a, dL/dbeta_a, dL/dzb, dL/dlambda_b, dL/dbeta_b)`` (the last two empty for an
    unnormalized zb). ``zb`` may be the bits (:func:`~tdbn.operators.spike_ops.pack_spikes`) of a spike tensor of
    ``zb_dtype``, read back here into this call's own temporary, free to be overwritten once the LIF backward pass
    has read it. ``group``: the tdBN backward sums of both branches are added over its processes in one
    all-reduce."""
    b = b if normalized_b else None
    zb_private = zb.dtype == torch.uint8
    if zb_private:  # a spike input kept as its bits (read back contiguous)
        zb = k.unpack_bits(zb, tuple(za.shape), zb_dtype)
        if zb.stride() != za.stride():  # channels-last: the one-pass kernels read both in one layout
            zb = torch.empty_like(za, dtype=zb_dtype).copy_(zb)
    with no_autocast(za.device):
        gs = _matching(za, grad_spikes)
        one_pass = _one_pass(k, za, zb, gs)
        if one_pass:  # recompute y and u per block and walk BPTT in one pass over za and zb
            affine_a = kernel_affine(*a)
            affine_b = kernel_affine(*b) if b is not None else None
            grad_y, _ = k.unit_backward(gs, za, affine_a, zb, affine_b, *lif)
            zac, zbc = za, zb  # the tdBN backward kernels read them in their own dtype
        else:
            zac, zbc = wide(za), wide(zb)
            y = bn_recompute(zac, *a, k)
            y.add_(bn_recompute(zbc, *b, k) if b is not None else zbc)
            grad_y = _lif_bptt_from(y, _matching(zac, gs), lif, k)
        del gs
        sums = [None, None]
        if group:
            own = [grad_sums(grad_y, zac, a.mean, k)]
            if b is not None:
                own.append(grad_sums(grad_y, zbc, b.mean, k))
            synced = synced_grad_sums(own, za.numel() // za.shape[2], group, grad_y.dtype)
            sums[:len(synced)] = synced
        if b is None:  # dL/dza may go into the spikes read back from the bits: nothing reads them any more
            spare = zb if zb_private and one_pass else None
            del zb, zbc
            grad_za, grad_wa, grad_ba = bn_backward(grad_y, zac, a.weight, a.mean, a.invstd, a.scale, k, sums[0],
                                                    into=spare)
            grads = grad_za.to(za.dtype), grad_wa, grad_ba, grad_y, grad_y.new_empty(0), grad_y.new_empty(0)
        else:
            grad_za, grad_wa, grad_ba = bn_backward(grad_y, zac, a.weight, a.mean, a.invstd, a.scale, k, sums[0])
            grad_zb, grad_wb, grad_bb = bn_backward(grad_y, zbc, b.weight, b.mean, b.invstd, b.scale, k, sums[1],
                                                    into=grad_y)
            grads = grad_za.to(za.dtype), grad_wa, grad_ba, grad_zb, grad_wb, grad_bb
    return grads[:3] + (grads[3].to(zb_dtype),) + grads[4:]


td_bn_add_lif_forward = Operator("td_bn_add_lif_forward", _junction_forward,
                                 "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
td_bn_add_lif_backward = Operator("td_bn_add_lif_backward", _junction_backward,
                                  "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")


@td_bn_add_lif_forward.register_fake
def _(za, a, zb, zb_mask, normalized_b, b, eps, lif, group):
    Ca, Cb = za.shape[2], (za.shape[2] if normalized_b else 0)  # zb may be bits; its shape is za's
    return (torch.empty_like(za), _stats_like(za, Ca), _stats_like(za, Ca), _stats_like(za, Ca),
            _stats_like(za, Cb), _stats_like(za, Cb), _stats_like(za, Cb))


@td_bn_add_lif_backward.register_fake
def _(grad_spikes, za, a, zb, zb_dtype, normalized_b, b, lif, group):
    Ca, Cb = za.shape[2], (za.shape[2] if normalized_b else 0)
    mean = a.mean
    return (torch.empty_like(za), mean.new_empty(Ca), mean.new_empty(Ca), za.new_empty(za.shape, dtype=zb_dtype),
            mean.new_empty(Cb), mean.new_empty(Cb))


def _junction_setup(ctx, inputs, output):
    za, a, zb, zb_mask, ctx.normalized_b, b, _, ctx.lif, ctx.group = inputs
    ctx.scales, ctx.zb_dtype = (a.scale, b.scale), zb.dtype
    _, mean_a, invstd_a, _, mean_b, invstd_b, _ = output
    # a spike input (identity shortcut) is kept as its bits: 1 bit per value
    ctx.save_for_backward(za, a.weight, a.bias, mean_a, invstd_a, zb if zb_mask is None else zb_mask, b.weight,
                          b.bias, mean_b, invstd_b)


def _junction_grad(ctx, grad_spikes, *_stats_grads):
    za, wa, ba, mean_a, invstd_a, zb, wb, bb, mean_b, invstd_b = ctx.saved_tensors
    a = TdBNBatch(wa, ba, mean_a, invstd_a, ctx.scales[0])
    b = TdBNBatch(wb, bb, mean_b, invstd_b, ctx.scales[1])
    g = td_bn_add_lif_backward(grad_spikes, za, a, zb, ctx.zb_dtype, ctx.normalized_b, b, ctx.lif, ctx.group)
    grad_b = _param_grads(wb, bb, g[4], g[5]) if ctx.normalized_b else None
    return g[0], _param_grads(wa, ba, g[1], g[2]), g[3], None, None, grad_b, None, None, None


td_bn_add_lif_forward.register_autograd(_junction_grad, setup_context=_junction_setup)


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
    b = norm_b.tdbn() if norm_b is not None else TdBN(None, None, 1.0)
    spikes, mean_a, _, var_a, mean_b, _, var_b = td_bn_add_lif_forward(
        za, norm_a.tdbn(), zb, zb_mask, norm_b is not None, b, norm_a.eps, LIFArgs.of(p), norm_a.group)
    update_running(norm_a.running_mean, norm_a.running_var, norm_a.momentum, mean_a, var_a)
    if norm_b is not None:
        update_running(norm_b.running_mean, norm_b.running_var, norm_b.momentum, mean_b, var_b)
    return spikes


__all__ = ["NormArgs", "lif_op", "td_bn_add_lif", "td_bn_lif"]
