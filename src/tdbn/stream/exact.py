"""Stateless layers of one step computed as the multi-step forward computes them, so results match bit for bit.

The multi-step forward runs a conv or fc layer once over ``T*N`` samples (``TimeDistributed``); a step runs it
over ``N``. PyTorch's CPU kernels are not batch-size invariant in general:

- convolution: ``F.conv2d`` picks oneDNN or its own im2col kernel from the batch size (ATen's
  ``ConvParams::use_mkldnn``: a single sample with a small input and a kernel of at most 3x3 takes im2col), and
  the two round differently. oneDNN itself gives every sample the same result at any batch size. A step
  therefore calls the kernel that ``F.conv2d`` would pick for ``T*N`` samples (:func:`conv2d_as_batch`).
- fully-connected: the BLAS ``gemm`` blocks its work by the number of rows, so a row's sums depend on how many
  rows there are (and where it sits). A step runs the layer on ``T*N`` rows, its own ``N`` rows placed where the
  multi-step forward has them (step ``t``: rows ``t*N .. t*N+N-1``) and zeros elsewhere
  (:func:`linear_as_batch`). The fc layers are small next to the convolutions, so the T-fold rows cost little
  (``bench/stream.py`` measures the step).

``T`` is the model's ``timesteps`` (the length of the sequences it was trained on and is compared with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _mkldnn_usable() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def picks_onednn(conv: nn.Conv2d, x: Tensor, batch: int) -> bool:
    """Whether ``F.conv2d`` runs ``conv`` through oneDNN for ``batch`` samples shaped like ``x`` (fp32 CPU),
    following ATen's ``ConvParams::use_mkldnn``."""
    if not _mkldnn_usable() or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return False
    kh, kw = conv.weight.shape[-2:]
    strided = any(s != 1 for s in conv.stride)
    dilated = any(d != 1 for d in conv.dilation)
    one_by_one = kh == 1 and kw == 1
    first = strided or dilated or batch >= 16 or not one_by_one or torch.get_num_threads() > 1
    second = conv.groups > 1 or (kh > 3 and kw > 3) or batch > 1 or batch * x[0].numel() > 20480
    return first and second


def conv2d_as_batch(conv: nn.Conv2d, x: Tensor, batch: int) -> Tensor:
    """``conv(x)`` computed with the kernel ``F.conv2d`` picks for ``batch`` samples (``x``: ``[N, C, H, W]``)."""
    if (conv.padding_mode != "zeros" or isinstance(conv.padding, str) or x.shape[0] == batch
            or not picks_onednn(conv, x, batch) or picks_onednn(conv, x, x.shape[0])):
        return conv._conv_forward(x, conv.weight, conv.bias)  # the same kernel either way
    fmt = torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()) \
        or (conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()) \
        else torch.contiguous_format
    return torch.mkldnn_convolution(x.contiguous(memory_format=fmt), conv.weight, conv.bias, list(conv.padding),
                                    list(conv.stride), list(conv.dilation), conv.groups)


def linear_as_batch(fc: nn.Linear, x: Tensor, *, rows: int, at: int) -> Tensor:
    """``fc(x)`` for ``x [N, F]`` computed inside a ``[rows, F]`` product, ``x`` at rows ``at .. at + N - 1``."""
    n = x.shape[0]
    if rows <= n or x.dim() != 2:
        return F.linear(x, fc.weight, fc.bias)
    padded = x.new_zeros(rows, x.shape[1])
    padded[at:at + n] = x
    return F.linear(padded, fc.weight, fc.bias)[at:at + n]
