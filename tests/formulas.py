"""Literal transcriptions shared by the formula tests: the spike function with its surrogate gradient."""

from __future__ import annotations

import torch


class RectangleSpike(torch.autograd.Function):
    """``H(d)`` forward; the rectangular surrogate of Eq. 16, ``1[|d| < width / 2] / width``, backward."""

    @staticmethod
    def forward(ctx, d, width=1.0):
        ctx.save_for_backward(d)
        ctx.width = width
        return (d > 0).to(d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return g * (d.abs() < ctx.width / 2).to(d.dtype) / ctx.width, None
