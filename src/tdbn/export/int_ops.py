"""Integer kernels shared by the int64 simulation (:mod:`tdbn.export.quant`) and its fast path
(:mod:`tdbn.export.quant_fast`)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["int_conv2d"]


def int_conv2d(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Integer 2-d convolution ``[N, C, H, W] x [K, C, kh, kw] -> [N, K, Ho, Wo]`` by im2col and an int64 matmul."""
    K, C, kh, kw = w.shape
    x = nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    cols = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # [N, C, Ho, Wo, kh, kw]
    N, _, Ho, Wo = cols.shape[:4]
    cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)
    return (cols @ w.reshape(K, -1).T).view(N, Ho, Wo, K).permute(0, 3, 1, 2)
