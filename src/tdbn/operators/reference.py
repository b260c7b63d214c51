"""The plain-PyTorch kernels: what every operator runs on a device without kernels of its own, and on the CPU
under :func:`tdbn.operators.use_reference` (or without a C compiler).

The entry points that :mod:`tdbn.operators.cpu` (C) and :mod:`tdbn.operators.cuda_units` (Triton) define with the
same arguments, less the one-pass tdBN and unit kernels: :func:`indexes` says that none exists here, so the
operators compose the tdBN maths of :mod:`tdbn.operators.batch_norm` and the LIF recursions.
"""

from __future__ import annotations

import math

import torch

from .recursions import bptt_reference as bptt
from .recursions import integrate_reference as integrate

Tensor = torch.Tensor


#: The storage dtypes the one-pass kernels read: none here (:mod:`tdbn.operators.cpu`'s ``COMPUTE`` for comparison).
COMPUTE: dict[torch.dtype, torch.dtype] = {}


def indexes(x: Tensor, *, mixed: bool = False) -> bool:
    """No one-pass tdBN and unit kernels here: the operators take the composition of plain operations."""
    return False


def pack_bits(x: Tensor) -> Tensor:
    """``x != 0`` as bits, 8 per byte (bit j of byte i is element ``8 i + j`` in row-major order)."""
    flat = (x != 0).reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=x.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(bits: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The 0/1 tensor of ``shape`` and ``dtype`` whose bits :func:`pack_bits` gave (contiguous)."""
    n = math.prod(shape)
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits[:, None] >> shifts) & 1).reshape(-1)[:n].view(shape).to(dtype)


__all__ = ["COMPUTE", "bptt", "indexes", "integrate", "pack_bits", "unpack_bits"]
