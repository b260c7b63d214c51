"""Triton kernels for the multi-step LIF neuron: the forward integration and the BPTT backward in one pass each.

The same recursions as :mod:`tdbn.functional.lif` (Eq. 1-3 forward, Eq. 14-18 backward), but each neuron's
whole time loop runs in registers inside one kernel launch, where the plain-PyTorch reference launches a few
kernels per time step. One program handles ``BLOCK`` neurons (the trailing dimensions flattened) and walks over ``T``:

- forward: reads ``x[t]``, writes ``u[t]`` and ``o[t]``;
- backward: reads ``u[t]`` and ``dL/do[t]`` from ``t = T-1`` down to 0, carries ``dL/du[t+1]`` in registers and
  writes ``dL/dx[t]``.

The LIF operators' CUDA registration runs them (:mod:`tdbn.operators.cuda_units` hands them on as its
``integrate`` / ``bptt``). They run on CUDA tensors, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``
set before ``triton`` is first imported), which is how the parity tests run them without a GPU: they call the
operators' implementations with these kernels (``tests/operators/test_operators_cuda_lif.py``).

Numerics: 32/64-bit inputs are integrated in their own precision with the same floating-point operations as
the reference (the forward is bit-identical to it); 16-bit inputs are integrated in float32 registers and
``u`` is rounded to the input dtype after every step (to nearest even on the GPU; Triton's interpreter rounds
toward zero), so the stored ``u`` is the state the neuron carries. The backward computes in float32 (float64
for float64 inputs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .cpu import time_major_dense
from .surrogate import SURROGATE_IDS  # the one table shared by every implementation

Tensor = torch.Tensor

BLOCK = 1024


@triton.jit
def _lif_forward_kernel(
    x_ptr, u_ptr, s_ptr, params_ptr, T, M,
    WRITE_SPIKES: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    acc_t = params_ptr.dtype.element_ty
    tau = tl.load(params_ptr)
    v_th = tl.load(params_ptr + 1)
    u = tl.zeros([BLOCK], dtype=acc_t)
    for t in range(T):
        idx = t * M + offs
        x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(acc_t)
        decayed = tl.where(u > v_th, 0.0, tau * u)  # tau * u[t-1] * (1 - o[t-1]), exactly
        u = (x + decayed).to(u_ptr.dtype.element_ty, fp_downcast_rounding="rtne")  # stored = carried state
        tl.store(u_ptr + idx, u, mask=mask)
        u = u.to(acc_t)
        if WRITE_SPIKES:
            tl.store(s_ptr + idx, tl.where(u > v_th, 1.0, 0.0).to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _surrogate(d, width, SURROGATE: tl.constexpr):
    if SURROGATE == 0:  # rectangle, Eq. 16
        sg = tl.where(tl.abs(d) < 0.5 * width, 1.0 / width, 0.0)
    elif SURROGATE == 1:  # triangle
        sg = tl.maximum(1.0 - tl.abs(d) / width, 0.0) / width
    elif SURROGATE == 2:  # sigmoid
        s = tl.sigmoid(d * (4.0 / width))
        sg = s * (1.0 - s) * (4.0 / width)
    else:  # atan
        z = d * (3.141592653589793 / width)
        sg = (1.0 / width) / (1.0 + z * z)
    return sg


@triton.jit
def _lif_backward_kernel(
    gs_ptr, u_ptr, gx_ptr, params_ptr, T, M,
    SURROGATE: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    acc_t = params_ptr.dtype.element_ty
    tau = tl.load(params_ptr)
    v_th = tl.load(params_ptr + 1)
    width = tl.load(params_ptr + 2)
    g_next = tl.zeros([BLOCK], dtype=acc_t)  # dL/du[t+1]
    for i in range(T):
        idx = (T - 1 - i) * M + offs
        u = tl.load(u_ptr + idx, mask=mask, other=0.0).to(acc_t)
        gs = tl.load(gs_ptr + idx, mask=mask, other=0.0).to(acc_t)
        go = gs - (tau * u) * g_next  # reset path, Eq. 15
        g = go * _surrogate(u - v_th, width, SURROGATE) + tl.where(u <= v_th, tau * g_next, 0.0)  # decay, Eq. 14
        tl.store(gx_ptr + idx, g.to(gx_ptr.dtype.element_ty), mask=mask)
        g_next = g


_PARAMS: dict[tuple, Tensor] = {}


def _params(device: torch.device, dtype: torch.dtype, tau: float, v_th: float, width: float) -> Tensor:
    """``[tau, v_th, width]`` as a device tensor in the accumulation dtype (cached: one upload per setting).

    Passed through memory, not as kernel scalars, which Triton types as float32: float64 runs keep full precision.
    """
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    key = (device, acc, float(tau), float(v_th), float(width))
    p = _PARAMS.get(key)
    if p is None:
        p = _PARAMS[key] = torch.tensor([tau, v_th, width], dtype=acc, device=device)
    return p


def interpreted() -> bool:
    """Whether Triton runs in interpreter mode (kernels on CPU tensors, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _grid(M: int):
    return (triton.cdiv(M, BLOCK),)


def _as_layout(ref: Tensor, t: Tensor) -> Tensor:
    """``t`` with ``ref``'s strides (a copy only when they differ)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def integrate(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
    """Triton form of :func:`tdbn.operators.recursions.integrate_reference`: ``u`` (may be ``x``) and optionally
    ``spikes``; with ``u=None`` only ``spikes``, which then also take each ``u[t]`` before its spike overwrites
    it (the same program stores both, in order): no membrane buffer.

    ``u`` and ``spikes`` must be dense and share a layout; ``x`` is copied to it if needed.
    """
    if u is None:
        if spikes is None:
            raise ValueError("cuda_lif.integrate: without u, spikes are the only output and must be given")
        u = spikes
    if not time_major_dense(u) or (spikes is not None and spikes.stride() != u.stride()):
        raise ValueError("cuda_lif.integrate: u and spikes must be dense tensors with the same strides")
    T = x.shape[0]
    M = x.numel() // T
    if M == 0:
        return
    x = _as_layout(u, x)
    params = _params(x.device, x.dtype, tau, v_th, 1.0)
    _lif_forward_kernel[_grid(M)](
        x, u, spikes if spikes is not None else u, params, T, M, WRITE_SPIKES=spikes is not None, BLOCK=BLOCK
    )


def bptt(
    grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str, *, reuse_u: bool = False
) -> Tensor:
    """Triton form of :func:`tdbn.operators.recursions.bptt_reference`; with ``reuse_u`` the gradient overwrites
    ``u``."""
    T = u.shape[0]
    M = u.numel() // T
    if not time_major_dense(u):
        u = u.contiguous()
    grad_spikes = _as_layout(u, grad_spikes)
    grad_x = u if reuse_u else torch.empty_like(u)
    if M == 0:
        return grad_x
    params = _params(u.device, u.dtype, tau, v_th, width)
    _lif_backward_kernel[_grid(M)](
        grad_spikes, u, grad_x, params, T, M, SURROGATE=SURROGATE_IDS[surrogate], BLOCK=BLOCK
    )
    return grad_x
