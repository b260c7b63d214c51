"""Per-step statistics of the normalizations with per-step maps (TEBN, BNTT, TAB, and the BN of an MPBN unit), as
their lean units need them (:class:`tdbn.layers.temporal_norm._NormLIF`): one pass per step over ``x [T, N, C, ...]``.

- :data:`step_sums`: ``[sum(x), sum(x^2)]`` per step and channel over batch and space, ``[2, T, C]``.
- :data:`step_grad_sums`: ``[sum(g * z), sum(g)]`` per step and channel, the gradients of a per-step affine map
  ``y = scale_t * z + shift_t`` from ``g = dL/dy``, ``[2, T, C]``.

Both accumulate in float64 and return float64. Where the device's kernels index the operand (``k.indexes``: the
C kernels on the CPU, Triton's on CUDA), each step is one call of the tdBN statistics kernel (``bn_sums``,
``bn_grad_sums`` with a zero mean), which reads 16-bit operands directly and makes no temporary of the operand's
size; elsewhere the plain-PyTorch composition, one step at a time in float32 for 16-bit input (then float64). No autograd:
the units call them inside their own forward and backward.
"""

from __future__ import annotations

import torch

from .batch_norm import WIDE
from .registration import Operator

Tensor = torch.Tensor


def _acc(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in WIDE else torch.float32


def _step_sums(x: Tensor, k) -> Tensor:
    T, N, C = x.shape[:3]
    if T > 0 and k.indexes(x[:1], mixed=True) and x.is_contiguous():
        return torch.stack([k.bn_sums(x[t:t + 1]).view(2, C) for t in range(T)], 1)
    acc = _acc(x)
    sums = []
    for t in range(T):  # one step in the accumulation dtype at a time (16-bit squares would round)
        v = x[t].reshape(N, C, -1).to(acc)
        sums.append(torch.stack([v.sum(2).sum(0), v.square().sum(2).sum(0)]))
    return torch.stack(sums, 1).to(torch.float64) if sums else x.new_zeros((2, 0, C), dtype=torch.float64)


def _step_grad_sums(g: Tensor, z: Tensor, k) -> Tensor:
    T, N, C = z.shape[:3]
    acc = _acc(z)
    if T > 0 and z.is_contiguous() and g.is_contiguous() and g.shape == z.shape and k.indexes(z[:1], mixed=True):
        zero = torch.zeros(C, dtype=acc, device=g.device)
        # the kernel reads g in z's compute dtype: a 16-bit gradient one step at a time in float32
        parts = [k.bn_grad_sums(g[t:t + 1].to(acc), z[t:t + 1], zero, wide=True) for t in range(T)]
        return torch.stack([torch.stack([gz for _, gz in parts]), torch.stack([s for s, _ in parts])])
    g4, z4 = g.reshape(T, N, C, -1), z.reshape(T, N, C, -1)
    g_scale = torch.stack([(g4[t].to(acc) * z4[t].to(acc)).sum(2).sum(0) for t in range(T)])  # a step at a time
    return torch.stack([g_scale, g4.sum(3, dtype=acc).sum(1)]).to(torch.float64)


def _fake(x: Tensor, *_: Tensor) -> Tensor:
    return x.new_empty((2, x.shape[0], x.shape[2]), dtype=torch.float64)


#: ``[sum(x), sum(x^2)]`` per step and channel of ``x [T, N, C, ...]``, float64 ``[2, T, C]``
step_sums = Operator("step_sums", _step_sums, "Tensor")
step_sums.register_fake(_fake)
#: ``[sum(g * z), sum(g)]`` per step and channel (``g``, ``z`` of one shape), float64 ``[2, T, C]``
step_grad_sums = Operator("step_grad_sums", _step_grad_sums, "Tensor")
step_grad_sums.register_fake(lambda g, z: _fake(z))
