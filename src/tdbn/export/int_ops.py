"""Integer kernels shared by the int64 simulation (:mod:`tdbn.export.quant`), its fast path
(:mod:`tdbn.export.quant_fast`) and the fine-tuning's fake-quantized network (:mod:`tdbn.export.qat`), and the
input of a node in their walks over the integer graph (:func:`node_input`)."""

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


def node_input(values: dict[str, torch.Tensor], is_static: dict[str, bool], sources: list[str], T: int,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
    """The sum of a node's sources in a walk over the integer graph, and whether it is static. A source is
    ``[T*N, ...]``, or ``[N, ...]`` while static (a static image before the first neuron), repeated over the ``T``
    steps where another source is not; each in ``dtype`` when given (exact for the integers each caller holds)."""
    static = all(is_static[s] for s in sources)
    total = None
    for s in sources:
        v = values[s] if dtype is None else values[s].to(dtype)
        v = v if static or not is_static[s] else v.repeat(T, *[1] * (v.dim() - 1))
        total = v if total is None else total + v
    return total, static
