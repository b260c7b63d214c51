"""Spikes as bits, and a conv over spikes that keeps only their bits for its backward pass.

:func:`pack_spikes` stores a 0/1 tensor as bits (8 per byte); :func:`spike_conv2d` is a conv whose input holds
only 0/1 (spikes): it stores the input's bits instead of 2 or 4 bytes per value, for its weight gradient. The
gradients are ATen's ``convolution_backward`` (the formula autograd uses for ``F.conv2d``) on the same values,
and the transposed convolution for the input gradient, bit for bit those of ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import custom_op

from . import reference
from .kernels import no_autocast, on_each_device

Tensor = torch.Tensor


@custom_op("tdbn::pack_spikes", mutates_args=())
def _pack_spikes_op(x: Tensor) -> Tensor:
    """Reference: ``x != 0`` as bits, 8 per byte (bit j of byte i is element ``8 i + j`` in row-major order)."""
    return reference.pack_bits(x)


on_each_device(_pack_spikes_op, lambda x, k: k.pack_bits(x.contiguous()))


@_pack_spikes_op.register_fake
def _(x):
    return x.new_empty((x.numel() + 7) // 8, dtype=torch.uint8)


@custom_op("tdbn::unpack_spikes", mutates_args=())
def _unpack_spikes_op(bits: Tensor, shape: list[int], dtype: torch.dtype) -> Tensor:
    """Reference: the 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_spikes` gave (contiguous)."""
    return reference.unpack_bits(bits, tuple(shape), dtype)


on_each_device(_unpack_spikes_op, lambda bits, shape, dtype, k: k.unpack_bits(bits, tuple(shape), dtype))


@_unpack_spikes_op.register_fake
def _(bits, shape, dtype):
    return bits.new_empty(shape, dtype=dtype)


def pack_spikes(x: Tensor) -> Tensor:
    """The bits of a spike tensor (values 0/1; any float dtype or bool): ``ceil(numel / 8)`` bytes, what the units
    store of a spike input for the backward pass. 32 times less than float32, 8 times less than a bool mask."""
    return torch.ops.tdbn.pack_spikes(x.detach())


def unpack_spikes(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_spikes` gave (contiguous)."""
    return torch.ops.tdbn.unpack_spikes(bits, list(shape), dtype)


@custom_op("tdbn::spike_conv2d", mutates_args=())
def _spike_conv2d_op(x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                     padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """``F.conv2d(x, ...)``; the backward pass reads ``x`` back from its bits ``mask`` (``x`` holds only 0/1)."""
    with no_autocast(x.device):
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


def _spike_conv2d_backward(grad, mask, x_shape, weight, has_bias, stride, padding, dilation, groups, output_mask, k):
    with no_autocast(grad.device):
        bias_sizes = [weight.shape[0]] if has_bias else None
        gx = gw = gb = None
        if output_mask[1] or output_mask[2]:  # weight gradients first, then the input read back is freed
            x = k.unpack_bits(mask, tuple(x_shape), weight.dtype)
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
                [False, output_mask[1], output_mask[2]],
            )
            del x
        if output_mask[0]:
            gx = _conv2d_input_grad(grad, x_shape, weight, stride, padding, dilation, groups)
        return tuple(g if g is not None else grad.new_empty(0) for g in (gx, gw, gb))


@custom_op("tdbn::spike_conv2d_backward", mutates_args=())
def _spike_conv2d_backward_op(grad: Tensor, mask: Tensor, x_shape: list[int], weight: Tensor, has_bias: bool,
                              stride: list[int], padding: list[int], dilation: list[int], groups: int,
                              output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """ATen's ``convolution_backward`` (autograd's formula for conv) on the input read back from its bits."""
    return _spike_conv2d_backward(grad, mask, x_shape, weight, has_bias, stride, padding, dilation, groups,
                                  output_mask, reference)


on_each_device(_spike_conv2d_backward_op, _spike_conv2d_backward)


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


__all__ = ["pack_spikes", "spike_conv2d", "unpack_spikes"]
