"""Spikes as bits, and a conv over spikes that keeps only their bits for its backward pass.

:func:`pack_spikes` stores a 0/1 tensor as bits (8 per byte); :func:`spike_conv2d` is a conv whose input holds
only 0/1 (spikes): it stores the input's bits instead of 2 or 4 bytes per value, for its weight gradient. The
gradients are ATen's ``convolution_backward`` (the formula autograd uses for ``F.conv2d``) on the same values,
and the transposed convolution for the input gradient, bit for bit those of ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import no_autocast
from .registration import ConvArgs, Operator

Tensor = torch.Tensor


def _pack_spikes(x: Tensor, k) -> Tensor:
    """``x != 0`` as bits, 8 per byte (bit j of byte i is element ``8 i + j`` in row-major order)."""
    return k.pack_bits(x.contiguous())


def _unpack_spikes(bits: Tensor, shape: list[int], dtype: torch.dtype, k) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_spikes` gave (contiguous)."""
    return k.unpack_bits(bits, tuple(shape), dtype)


pack_spikes_op = Operator("pack_spikes", _pack_spikes, "Tensor")
unpack_spikes_op = Operator("unpack_spikes", _unpack_spikes, "Tensor")
pack_spikes_op.register_fake(lambda x: x.new_empty((x.numel() + 7) // 8, dtype=torch.uint8))
unpack_spikes_op.register_fake(lambda bits, shape, dtype: bits.new_empty(shape, dtype=dtype))


def pack_spikes(x: Tensor) -> Tensor:
    """The bits of a spike tensor (values 0/1; any float dtype or bool): ``ceil(numel / 8)`` bytes, what the units
    store of a spike input for the backward pass. 32 times less than float32, 8 times less than a bool mask."""
    return pack_spikes_op(x.detach())


def unpack_spikes(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_spikes` gave (contiguous)."""
    return unpack_spikes_op(bits, list(shape), dtype)


def _spike_conv2d(x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs, k) -> Tensor:
    """``F.conv2d(x, ...)``; the backward pass reads ``x`` back from its bits ``mask`` (``x`` holds only 0/1)."""
    with no_autocast(x.device):
        return F.conv2d(x, weight, bias, *conv)


def _conv2d_input_grad(grad: Tensor, x_shape: list[int], weight: Tensor, conv: ConvArgs) -> Tensor:
    """``dL/dx`` of ``conv2d(x, weight)`` from the output gradient and ``x``'s shape alone: the transposed
    convolution, with the output padding that gives back ``x``'s size. The same kernel and values, bit for bit,
    as autograd's ``convolution_backward`` on a stored ``x`` (tested in both memory formats); a stand-in input
    expanded from one element would be made dense inside ATen (a copy of ``x``'s size) and is computed in the
    contiguous format whatever the gradient's."""
    stride, padding, dilation, groups = conv
    k = weight.shape[2:]
    out = grad.shape[2:]
    output_padding = [x_shape[2 + i] - ((out[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
                      for i in range(2)]
    return F.conv_transpose2d(grad, weight, None, stride, padding, output_padding, groups, dilation)


def _spike_conv2d_backward(grad: Tensor, mask: Tensor, x_shape: list[int], weight: Tensor, has_bias: bool,
                           conv: ConvArgs, output_mask: list[bool], k):
    """ATen's ``convolution_backward`` (autograd's formula for conv) on the input read back from its bits."""
    with no_autocast(grad.device):
        bias_sizes = [weight.shape[0]] if has_bias else None
        gx = gw = gb = None
        if output_mask[1] or output_mask[2]:  # weight gradients first, then the input read back is freed
            x = k.unpack_bits(mask, tuple(x_shape), weight.dtype)
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups,
                [False, output_mask[1], output_mask[2]],
            )
            del x
        if output_mask[0]:
            gx = _conv2d_input_grad(grad, x_shape, weight, conv)
        return tuple(g if g is not None else grad.new_empty(0) for g in (gx, gw, gb))


spike_conv2d_forward = Operator("spike_conv2d", _spike_conv2d, "Tensor")
spike_conv2d_backward = Operator("spike_conv2d_backward", _spike_conv2d_backward, "(Tensor, Tensor, Tensor)")


@spike_conv2d_forward.register_fake
def _(x, mask, weight, bias, conv):
    return F.conv2d(x, weight, bias, *conv)


@spike_conv2d_backward.register_fake
def _(grad, mask, x_shape, weight, has_bias, conv, output_mask):
    gx = torch.empty(x_shape, dtype=weight.dtype, device=grad.device) if output_mask[0] else grad.new_empty(0)
    gw = torch.empty_like(weight) if output_mask[1] else grad.new_empty(0)
    gb = grad.new_empty(weight.shape[0]) if output_mask[2] else grad.new_empty(0)
    return gx, gw, gb


def _spike_conv_setup(ctx, inputs, output):
    x, mask, weight, bias, ctx.conv = inputs
    ctx.has_bias = bias is not None
    ctx.x_shape = list(x.shape)
    ctx.save_for_backward(mask, weight)


def _spike_conv_grad(ctx, grad):
    mask, weight = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[3]]
    gx, gw, gb = spike_conv2d_backward(grad, mask, ctx.x_shape, weight, ctx.has_bias, ctx.conv, needs)
    return gx if needs[0] else None, None, gw if needs[1] else None, gb if needs[2] else None, None


spike_conv2d_forward.register_autograd(_spike_conv_grad, setup_context=_spike_conv_setup)


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
    return spike_conv2d_forward(x, mask, weight, bias, ConvArgs(list(conv.stride), list(conv.padding),
                                                                list(conv.dilation), conv.groups))


__all__ = ["pack_spikes", "spike_conv2d", "unpack_spikes"]
