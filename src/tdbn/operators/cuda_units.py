"""Triton kernels for tdBN and the training units: the CUDA counterpart of :mod:`tdbn.operators.cpu`.

The same entry points as the compiled CPU kernels (:mod:`tdbn.operators.cpu`), with the same arguments and the
same arithmetic, for ``[T, N, C, ...]`` tensors that are contiguous or
channels-last, stored in float32, float64, bfloat16 or float16:

- tdBN (Eq. 5-8): :func:`bn_stats` (mean, then the biased variance around the rounded mean: two reading passes),
  :func:`bn_sums` (``sum z`` and ``sum z^2`` for a synchronized batch), :func:`bn_affine`,
  :func:`bn_grad_sums` and :func:`bn_grad_input` (the backward pass in two);
- the units: :func:`unit_forward` (the tdBN output, or the junction's sum of two, and the LIF recursion of
  Eq. 1-3 in one pass, writing only the spikes) and :func:`unit_backward` (``y`` and ``u`` recomputed from
  ``z`` and the per-channel vectors with the forward pass's operations, BPTT of Eq. 14-15, 18 walked back in
  time with ``dL/du[t+1]`` in registers, and the per-channel sums the tdBN backward pass needs).

Arithmetic. 16-bit storage is read exactly into float32 and computed there (float64 in float64); the
per-channel vectors are in that compute dtype; the tdBN input gradient is rounded once to the storage dtype.
Statistics and every per-channel sum are accumulated in float64, as the CPU kernels do: each program adds its
elements in float64 registers and writes one partial sum per channel, and the partial sums are added by
PyTorch (no atomics, so results are deterministic); only the order of the additions differs from the CPU
kernels'. Like the CPU unit kernels, the unit backward sums a neuron's terms over time in the compute dtype
first. Kernels are compiled without floating-point contraction (``enable_fp_fusion=False``): the tdBN affine
``(z - mean) * w + bias`` and the membrane step round after each operation, as in the C kernels (built with
``-ffp-contract=off``), so spikes and ``u`` equal theirs bit for bit for float32 and float64 given the same
per-channel vectors; the BPTT step uses the same two fused multiply-adds as the C kernels. Divisions are
IEEE-rounded (``div_rn``); ``exp`` (sigmoid surrogate) is the device's, which agrees to float rounding.

Storage of the backward pass: no ``[T, ...]`` membrane tensor is kept between the passes. Inside
:func:`unit_backward` each program writes its neurons' recomputed ``u[t]`` into the ``dL/dy`` output it
writes anyway, then walks back in time reading ``u[t]`` and overwriting it with ``dL/dy[t]`` (the C kernels use
a per-thread buffer the same way): no allocation beyond the output, and the round trip stays in the GPU's L2
cache for a program's small block.

Runs on CUDA tensors, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1`` set before ``triton``
is first imported), which is how the parity tests run without a GPU.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import triton
import triton.language as tl

from .surrogate import SURROGATE_IDS  # the one table shared by every implementation
from . import cuda_lif
from .cuda_lif import interpreted
from .reference import pack_bits, unpack_bits  # no kernels of their own here

Tensor = torch.Tensor

#: ``(mean, w, bias)`` of a tdBN as the unit kernels apply it: ``(z - mean) * w + bias`` per channel.
Affine = tuple[Tensor, Tensor, Tensor | None]

#: The compute dtype per storage dtype: 16-bit values are read exactly into float32.
COMPUTE = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32,
           torch.float16: torch.float32}

#: How many times each entry point launched its Triton kernel in this process (the sentinel tests read it).
calls: Counter[str] = Counter()

ELEMENTS = 1024  # elements per program and loop iteration


def integrate(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
    """The LIF forward recursion: :func:`tdbn.operators.cuda_lif.integrate`."""
    calls["integrate"] += 1
    cuda_lif.integrate(x, u, tau, v_th, spikes)


def bptt(grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str, *,
         reuse_u: bool = False) -> Tensor:
    """The LIF backward recursion: :func:`tdbn.operators.cuda_lif.bptt`."""
    calls["bptt"] += 1
    return cuda_lif.bptt(grad_spikes, u, tau, v_th, width, surrogate, reuse_u=reuse_u)
MAX_PROGRAMS = 2048  # beyond this the programs loop over rows (grid-stride)
_LAUNCH = dict(num_warps=4, enable_fp_fusion=False)


# ---------------------------------------------------------------------------------------------------------
# tiles: a tensor [T, N, C, ...] seen as rows x C x S (S the spatial size; channels-last: S = 1, C innermost)


@triton.jit
def _tile(C, S, BC: tl.constexpr, BS: tl.constexpr):
    """This program's channels ``c`` [BC], the offsets of its columns within a row ``[1, BC, BS]`` and their
    mask."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    s = tl.program_id(1) * BS + tl.arange(0, BS)
    col = c[None, :, None].to(tl.int64) * S + s[None, None, :]
    return c, col, (c < C)[None, :, None] & (s < S)[None, None, :]


@triton.jit
def _rows(rb, R, C, S, col, cmask, BR: tl.constexpr):
    """Offsets ``[BR, BC, BS]`` and mask of rows ``rb ..< rb + BR``."""
    r = rb + tl.arange(0, BR)
    off = r[:, None, None].to(tl.int64) * (C * S) + col
    return off, (r < R)[:, None, None] & cmask


@triton.jit
def _vector(ptr, c, C):
    """A per-channel vector at this program's channels, shaped ``[1, BC, 1]``."""
    return tl.load(ptr + c, mask=c < C, other=0.0)[None, :, None]


@triton.jit
def _store_partials(part_ptr, s0, s1, c, C, NS):
    """One program's per-channel float64 sums ``s0``, ``s1`` [BC] into row ``pid_r * NS + pid_s`` of the
    partial sums ``[rows, 2, C]``."""
    row = (tl.program_id(2) * NS + tl.program_id(1)).to(tl.int64)
    base = part_ptr + row * 2 * C
    tl.store(base + c, s0, mask=c < C)
    tl.store(base + C + c, s1, mask=c < C)


# ---------------------------------------------------------------------------------------------------------
# tdBN kernels over x viewed as [R, C, S]


@triton.jit
def _bn_reduce_kernel(x_ptr, g_ptr, mean_ptr, part_ptr, R, C, S, NS,
                      MODE: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    """Per-channel float64 sums: MODE 0 ``sum x``; 1 ``sum (x - mean)^2``; 2 ``sum x``, ``sum x^2``;
    3 ``sum g``, ``sum g * (x - mean)``."""
    c, col, cmask = _tile(C, S, BC, BS)
    acc0 = tl.zeros([BR, BC, BS], dtype=tl.float64)
    acc1 = tl.zeros([BR, BC, BS], dtype=tl.float64)
    if MODE % 2 == 1:  # 1 and 3 centre on the mean
        m = _vector(mean_ptr, c, C).to(tl.float64)
    for rb in range(tl.program_id(2) * BR, R, tl.num_programs(2) * BR):
        off, mask = _rows(rb, R, C, S, col, cmask, BR)
        v = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float64)
        if MODE == 0:
            acc0 += v
        elif MODE == 1:
            d = tl.where(mask, v - m, 0.0)
            acc0 += d * d
        elif MODE == 2:
            acc0 += v
            acc1 += v * v
        else:
            gg = tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float64)
            acc0 += gg
            acc1 += gg * (v - m)
    _store_partials(part_ptr, tl.sum(tl.sum(acc0, axis=2), axis=0), tl.sum(tl.sum(acc1, axis=2), axis=0), c, C,
                    NS)


@triton.jit
def _bn_affine_kernel(x_ptr, y_ptr, mean_ptr, w_ptr, b_ptr, R, C, S,
                      HAS_BIAS: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    """``y = (x - mean) * w + bias`` per channel, each operation rounded in the compute dtype (``y``'s)."""
    c, col, cmask = _tile(C, S, BC, BS)
    acc_t = y_ptr.dtype.element_ty
    m, w = _vector(mean_ptr, c, C), _vector(w_ptr, c, C)
    if HAS_BIAS:
        bias = _vector(b_ptr, c, C)
    for rb in range(tl.program_id(2) * BR, R, tl.num_programs(2) * BR):
        off, mask = _rows(rb, R, C, S, col, cmask, BR)
        y = (tl.load(x_ptr + off, mask=mask, other=0.0).to(acc_t) - m) * w
        if HAS_BIAS:
            y = y + bias
        tl.store(y_ptr + off, y, mask=mask)


@triton.jit
def _bn_grad_input_kernel(g_ptr, x_ptr, out_ptr, mean_ptr, k_ptr, c0_ptr, cx_ptr, R, C, S,
                          BR: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    """``out = (g * k + c0) + (x - mean) * cx`` per channel in the compute dtype (``g``'s), rounded once to
    ``out``'s dtype. ``out`` may be ``g``: every element is read before it is written, by the same program."""
    c, col, cmask = _tile(C, S, BC, BS)
    acc_t = g_ptr.dtype.element_ty
    m, k = _vector(mean_ptr, c, C), _vector(k_ptr, c, C)
    c0, cx = _vector(c0_ptr, c, C), _vector(cx_ptr, c, C)
    for rb in range(tl.program_id(2) * BR, R, tl.num_programs(2) * BR):
        off, mask = _rows(rb, R, C, S, col, cmask, BR)
        g = tl.load(g_ptr + off, mask=mask, other=0.0)
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(acc_t)
        out = (g * k + c0) + (x - m) * cx
        tl.store(out_ptr + off, out.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------
# the units over za (and zb) [T, R, C, S], one time step being R x C x S neurons


@triton.jit
def _unit_y(za_ptr, zb_ptr, idx, mask, ma, wa, ba, mb, wb, bb, MODE: tl.constexpr, HAS_BA: tl.constexpr,
            HAS_BB: tl.constexpr):
    """The unit's input at one step: ``bn_a(za)``, plus ``zb`` (MODE 1) or ``bn_b(zb)`` (MODE 2), operation by
    operation as the C kernels (and ``bn_affine`` plus the torch addition) compute it."""
    acc_t = ma.dtype
    y = (tl.load(za_ptr + idx, mask=mask, other=0.0).to(acc_t) - ma) * wa
    if HAS_BA:
        y = y + ba
    if MODE == 1:
        y = y + tl.load(zb_ptr + idx, mask=mask, other=0.0).to(acc_t)
    elif MODE == 2:
        yb = (tl.load(zb_ptr + idx, mask=mask, other=0.0).to(acc_t) - mb) * wb
        if HAS_BB:
            yb = yb + bb
        y = y + yb
    return y


@triton.jit
def _unit_vectors(ma_ptr, wa_ptr, ba_ptr, mb_ptr, wb_ptr, bb_ptr, c, C, MODE: tl.constexpr,
                  HAS_BA: tl.constexpr, HAS_BB: tl.constexpr):
    ma, wa = _vector(ma_ptr, c, C), _vector(wa_ptr, c, C)
    ba = ma  # placeholders where a vector is absent (never read)
    mb = ma
    wb = ma
    bb = ma
    if HAS_BA:
        ba = _vector(ba_ptr, c, C)
    if MODE == 2:
        mb, wb = _vector(mb_ptr, c, C), _vector(wb_ptr, c, C)
        if HAS_BB:
            bb = _vector(bb_ptr, c, C)
    return ma, wa, ba, mb, wb, bb


@triton.jit
def _lif_step(u, y, tau, v_th):
    """``u[t] = y[t] + (tau * u[t-1]) * (1 - o[t-1])`` with ``o = u > v_th`` (Eq. 1-2); ``u[-1] = 0``."""
    keep = (u <= v_th).to(u.dtype)
    return y + (tau * u) * keep


@triton.jit
def _unit_forward_kernel(za_ptr, zb_ptr, ma_ptr, wa_ptr, ba_ptr, mb_ptr, wb_ptr, bb_ptr, s_ptr, params_ptr,
                         T, M, LAST, R, C, S, MODE: tl.constexpr, HAS_BA: tl.constexpr, HAS_BB: tl.constexpr,
                         BR: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    c, col, cmask = _tile(C, S, BC, BS)
    acc_t = params_ptr.dtype.element_ty
    tau = tl.load(params_ptr)
    v_th = tl.load(params_ptr + 2)
    ma, wa, ba, mb, wb, bb = _unit_vectors(ma_ptr, wa_ptr, ba_ptr, mb_ptr, wb_ptr, bb_ptr, c, C, MODE, HAS_BA,
                                           HAS_BB)
    for rb in range(tl.program_id(2) * BR, R, tl.num_programs(2) * BR):
        off, mask = _rows(rb, R, C, S, col, cmask, BR)
        u = tl.zeros([BR, BC, BS], dtype=acc_t)
        idx = off  # int64: step t at t * M + off
        for t in range(T):
            y = _unit_y(za_ptr, zb_ptr, idx, mask, ma, wa, ba, mb, wb, bb, MODE, HAS_BA, HAS_BB)
            u = _lif_step(u, y, tau, v_th)
            tl.store(s_ptr + idx, tl.where(u > v_th, 1.0, 0.0).to(s_ptr.dtype.element_ty), mask=mask)
            idx += M


@triton.jit
def _div(x, y):
    """``x / y`` rounded to nearest (IEEE), in float32 and float64 alike (Triton's float32 ``/`` is approximate)."""
    if x.dtype == tl.float64:
        q = x / y
    else:
        q = tl.div_rn(x, y)
    return q


@triton.jit
def _surrogate(d, width, half, inv, four, piw, SURROGATE: tl.constexpr):
    """The surrogate derivatives of :mod:`tdbn.operators.surrogate`, operation by operation as the C kernels."""
    if SURROGATE == 0:  # rectangle, Eq. 16
        sg = (tl.abs(d) < half).to(d.dtype) * inv
    elif SURROGATE == 1:  # triangle
        sg = tl.maximum(1.0 - _div(tl.abs(d), width + tl.zeros_like(d)), 0.0) * inv
    elif SURROGATE == 2:  # sigmoid
        s = _div(tl.zeros_like(d) + 1.0, 1.0 + tl.exp(-(d * four)))
        sg = s * (1.0 - s) * four
    else:  # atan
        z = d * piw
        sg = _div(tl.zeros_like(d) + inv, 1.0 + z * z)
    return sg


@triton.jit
def _unit_backward_kernel(gs_ptr, za_ptr, zb_ptr, ma_ptr, wa_ptr, ba_ptr, mb_ptr, wb_ptr, bb_ptr, gy_ptr,
                          params_ptr, part_ptr, T, M, LAST, R, C, S, NS,
                          MODE: tl.constexpr, HAS_BA: tl.constexpr, HAS_BB: tl.constexpr, SUMS: tl.constexpr,
                          SURROGATE: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    c, col, cmask = _tile(C, S, BC, BS)
    acc_t = params_ptr.dtype.element_ty
    tau = tl.load(params_ptr)
    neg_tau = tl.load(params_ptr + 1)
    v_th = tl.load(params_ptr + 2)
    width = tl.load(params_ptr + 3)
    half = tl.load(params_ptr + 4)
    inv = tl.load(params_ptr + 5)
    four = tl.load(params_ptr + 6)
    piw = tl.load(params_ptr + 7)
    ma, wa, ba, mb, wb, bb = _unit_vectors(ma_ptr, wa_ptr, ba_ptr, mb_ptr, wb_ptr, bb_ptr, c, C, MODE, HAS_BA,
                                           HAS_BB)
    sum_g = tl.zeros([BC], dtype=tl.float64)
    sum_gx = tl.zeros([BC], dtype=tl.float64)
    for rb in range(tl.program_id(2) * BR, R, tl.num_programs(2) * BR):
        off, mask = _rows(rb, R, C, S, col, cmask, BR)
        # forward again: u[t] (the forward pass's operations), parked in dL/dy[t] until step t of BPTT reads it
        u = tl.zeros([BR, BC, BS], dtype=acc_t)
        idx = off
        for t in range(T):
            y = _unit_y(za_ptr, zb_ptr, idx, mask, ma, wa, ba, mb, wb, bb, MODE, HAS_BA, HAS_BB)
            u = _lif_step(u, y, tau, v_th)
            tl.store(gy_ptr + idx, u, mask=mask)
            idx += M
        tl.debug_barrier()
        # BPTT, Eq. 14-15, 18: dL/du[t] = dL/do[t] sg(u[t]) - ... with dL/du[t+1] carried in registers
        gn = tl.zeros([BR, BC, BS], dtype=acc_t)
        lg = tl.zeros([BR, BC, BS], dtype=acc_t)
        lgx = tl.zeros([BR, BC, BS], dtype=acc_t)
        idx = off + LAST  # step T - 1, then back
        for i in range(T):
            v = tl.load(gy_ptr + idx, mask=mask, other=0.0)
            gs = tl.load(gs_ptr + idx, mask=mask, other=0.0).to(acc_t)
            sg = _surrogate(v - v_th, width, half, inv, four, piw, SURROGATE)
            go = tl.fma(neg_tau * v, gn, gs) * sg  # reset path, Eq. 15
            gn = tl.fma(tau * (v <= v_th).to(acc_t), gn, go)  # + decay path, Eq. 14
            tl.store(gy_ptr + idx, gn, mask=mask)
            if SUMS:
                lg += gn
                lgx += gn * (tl.load(za_ptr + idx, mask=mask, other=0.0).to(acc_t) - ma)
            idx -= M
        if SUMS:
            sum_g += tl.sum(tl.sum(lg.to(tl.float64), axis=2), axis=0)
            sum_gx += tl.sum(tl.sum(lgx.to(tl.float64), axis=2), axis=0)
    if SUMS:
        _store_partials(part_ptr, sum_g, sum_gx, c, C, NS)


# ---------------------------------------------------------------------------------------------------------
# host side


class _Plan:
    """How one operand ``[T, N, C, ...]`` is walked: ``R`` rows (``T`` times as many for the tdBN kernels,
    which see all steps as rows) of ``C x S``, blocks ``BR x BC x BS`` and the grid."""

    def __init__(self, x: Tensor, what: str):
        if not (x.device.type == "cuda" or (x.device.type == "cpu" and interpreted())):
            raise ValueError(f"{what}: runs on CUDA tensors (or on CPU tensors when TRITON_INTERPRET=1 is set before "
                             f"triton is imported, for tests), got a {x.device.type} tensor; on the CPU use "
                             "tdbn.operators.cpu")
        if x.dtype not in COMPUTE:
            raise ValueError(f"{what}: takes {', '.join(str(d) for d in COMPUTE)} tensors, got {x.dtype}; convert "
                             "the input with .float()")
        if x.dim() < 3 or x.numel() == 0:
            raise ValueError(f"{what}: expects a non-empty [T, N, C, ...] tensor, got shape {tuple(x.shape)}")
        self.T, self.C = x.shape[0], x.shape[2]
        if x.is_contiguous():
            self.S = math.prod(x.shape[3:])
        elif x.dim() > 3 and x.movedim(2, -1).is_contiguous():  # channels-last: C innermost
            self.S = 1
        else:
            raise ValueError(f"{what}: the operand of shape {tuple(x.shape)} and strides {x.stride()} is neither "
                             "contiguous nor channels-last; pass x.contiguous()")
        self.rows = x.numel() // (self.C * self.S)  # over all steps; per step: rows // T
        self.x = x

    def blocks(self, rows: int) -> dict:
        C, S = self.C, self.S  # runs of S contiguous values (coalesced), then channels, then rows
        BS = min(triton.next_power_of_2(S), ELEMENTS)
        BC = min(triton.next_power_of_2(C), max(1, ELEMENTS // BS), 64)
        BR = max(1, min(ELEMENTS // (BC * BS), triton.next_power_of_2(rows)))
        return dict(BR=BR, BC=BC, BS=BS)

    def grid(self, rows: int) -> tuple[tuple[int, int, int], dict]:
        b = self.blocks(rows)
        nc, ns = triton.cdiv(self.C, b["BC"]), triton.cdiv(self.S, b["BS"])
        nr = min(triton.cdiv(rows, b["BR"]), max(1, MAX_PROGRAMS // (nc * ns)))
        return (nc, ns, nr), b

    def check_like(self, what: str, t: Tensor | None, name: str, dtype: torch.dtype | None = None) -> None:
        """``t`` must have the operand's shape, strides and device, and ``dtype`` (default: the operand's)."""
        if t is None:
            return
        x, dtype = self.x, dtype or self.x.dtype
        if t.shape != x.shape or t.stride() != x.stride() or t.device != x.device or t.dtype != dtype:
            raise ValueError(f"{what}: {name} ({t.dtype}, shape {tuple(t.shape)}, strides {t.stride()}, "
                             f"{t.device}) must be {dtype} with the shape, strides and device of the input "
                             f"({tuple(x.shape)}, {x.stride()}, {x.device})")

    def vector(self, what: str, v: Tensor | None, name: str) -> Tensor | None:
        """A per-channel operand as ``C`` contiguous values in the compute dtype, on the operand's device."""
        if v is None:
            return None
        if v.numel() != self.C:
            raise ValueError(f"{what}: {name} has {v.numel()} values for {self.C} channels")
        return v.reshape(-1).to(device=self.x.device, dtype=COMPUTE[self.x.dtype]).contiguous()


def indexes(x: Tensor, *, mixed: bool = False) -> bool:
    """Whether the tdBN and unit kernels index ``x`` [T, N, C, ...]: contiguous or channels-last, float32/64 (with
    ``mixed`` also bfloat16 and float16, computed in float32); the callers take the reference's operations
    otherwise."""
    if x.numel() == 0 or x.dim() < 3 or x.dtype not in (COMPUTE if mixed else (torch.float32, torch.float64)):
        return False
    return x.is_contiguous() or (x.dim() > 3 and x.movedim(2, -1).is_contiguous())


def _reduce(plan: _Plan, mode: int, g: Tensor | None = None, mean: Tensor | None = None) -> Tensor:
    """Per-channel float64 sums ``[2, C]`` by :func:`_bn_reduce_kernel` (``mode`` as there)."""
    grid, b = plan.grid(plan.rows)
    part = torch.empty(grid[2] * grid[1], 2, plan.C, dtype=torch.float64, device=plan.x.device)
    x = plan.x
    _bn_reduce_kernel[grid](x, x if g is None else g, x if mean is None else mean, part, plan.rows, plan.C,
                            plan.S, grid[1], MODE=mode, **b, **_LAUNCH)
    return part.sum(0)


def bn_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance around it (Eq. 6-7), both in ``x``'s compute dtype: the mean of a
    float64 sum rounded to the compute dtype, then the float64 mean of ``(x - mean)^2`` around that rounded
    mean (two reading passes, as :func:`tdbn.operators.cpu.bn_stats`)."""
    plan = _Plan(x, "cuda_units.bn_stats")
    calls["bn_stats"] += 1
    n = x.numel() // plan.C
    mean = (_reduce(plan, 0)[0] / n).to(COMPUTE[x.dtype])
    var = _reduce(plan, 1, mean=mean)[0] / n
    return mean, var.to(mean.dtype)


def bn_sums(x: Tensor) -> Tensor:
    """Per-channel ``sum(x)`` and ``sum(x^2)`` in one pass, accumulated and returned in float64 (``[2C]``): one
    process's share of the statistics of a tdBN synchronized across processes."""
    plan = _Plan(x, "cuda_units.bn_sums")
    calls["bn_sums"] += 1
    return _reduce(plan, 2).reshape(-1)


def bn_affine(x: Tensor, mean: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``(x - mean) * w + bias`` per channel, each operation rounded; a new tensor with ``x``'s strides, in its
    compute dtype."""
    what = "cuda_units.bn_affine"
    plan = _Plan(x, what)
    mean, w, bias = (plan.vector(what, v, n) for v, n in ((mean, "mean"), (w, "w"), (bias, "bias")))
    y = torch.empty_like(x, dtype=COMPUTE[x.dtype])
    grid, b = plan.grid(plan.rows)
    calls["bn_affine"] += 1
    _bn_affine_kernel[grid](x, y, mean, w, mean if bias is None else bias, plan.rows, plan.C, plan.S,
                            HAS_BIAS=bias is not None, **b, **_LAUNCH)
    return y


def bn_grad_sums(g: Tensor, x: Tensor, mean: Tensor, *, wide: bool = False) -> tuple[Tensor, Tensor]:
    """Per-channel ``sum(g)`` and ``sum(g * (x - mean))`` (float64 accumulation, returned in ``x``'s compute
    dtype, or in float64 with ``wide``); ``g`` is in that compute dtype with ``x``'s strides."""
    what = "cuda_units.bn_grad_sums"
    plan = _Plan(x, what)
    plan.check_like(what, g, "g", COMPUTE[x.dtype])
    mean = plan.vector(what, mean, "mean")
    calls["bn_grad_sums"] += 1
    out = _reduce(plan, 3, g=g, mean=mean)
    out = out if wide else out.to(COMPUTE[x.dtype])
    return out[0], out[1]


def bn_grad_input(g: Tensor, x: Tensor, mean: Tensor, k: Tensor, c0: Tensor, cx: Tensor, *,
                  out: Tensor | None = None) -> Tensor:
    """``(g * k + c0) + (x - mean) * cx`` per channel: the tdBN input gradient in ``x``'s dtype (computed in the
    compute dtype, which ``g`` has, and rounded once), into ``out`` (``x``'s dtype and strides; may be ``g``
    itself) or a new tensor."""
    what = "cuda_units.bn_grad_input"
    plan = _Plan(x, what)
    plan.check_like(what, g, "g", COMPUTE[x.dtype])
    out = torch.empty_like(x) if out is None else out
    plan.check_like(what, out, "out")
    vecs = [plan.vector(what, v, n) for v, n in ((mean, "mean"), (k, "k"), (c0, "c0"), (cx, "cx"))]
    grid, b = plan.grid(plan.rows)
    calls["bn_grad_input"] += 1
    _bn_grad_input_kernel[grid](g, x, out, *vecs, plan.rows, plan.C, plan.S, **b, **_LAUNCH)
    return out


def _unit_operands(what: str, za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None):
    """The plan, mode (0: ``zb`` None; 1: ``zb`` unnormalized; 2: normalized) and the six vectors (a placeholder
    where absent) with their flags."""
    plan = _Plan(za, what)
    plan.check_like(what, zb, "zb")
    if zb is None and b is not None:
        raise ValueError(f"{what}: the affine b comes with a second input zb; pass zb or b=None")
    mode = 0 if zb is None else (1 if b is None else 2)
    va = [plan.vector(what, v, n) for v, n in zip(a, ("mean_a", "w_a", "bias_a"))]
    vb = [plan.vector(what, v, n) for v, n in zip(b, ("mean_b", "w_b", "bias_b"))] if b is not None else [None] * 3
    flags = dict(MODE=mode, HAS_BA=va[2] is not None, HAS_BB=vb[2] is not None)
    vecs = [v if v is not None else va[0] for v in va + vb]
    return plan, mode, vecs, flags


def _steps(plan: _Plan, rows: int) -> tuple[int, int, int, int, int]:
    """``(M, (T - 1) * M, R, C, S)`` for a unit kernel: offsets as host integers (64-bit where they need it)."""
    M = rows * plan.C * plan.S
    return M, (plan.T - 1) * M, rows, plan.C, plan.S


_PARAMS: dict[tuple, Tensor] = {}


def _params(device: torch.device, dtype: torch.dtype, tau: float, v_th: float, width: float) -> Tensor:
    """``[tau, -tau, v_th, width, width/2, 1/width, 4/width, pi/width]``, each computed in float64 and rounded
    once to the compute dtype as the C kernels do, as a device tensor (cached; float64 kernel scalars would be
    passed as float32)."""
    key = (device, dtype, float(tau), float(v_th), float(width))
    p = _PARAMS.get(key)
    if p is None:
        w = float(width)
        values = [tau, -tau, v_th, w, 0.5 * w, 1.0 / w, 4.0 / w, 3.141592653589793 / w]
        p = _PARAMS[key] = torch.tensor(values, dtype=dtype, device=device)
    return p


def unit_forward(za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None, tau: float, v_th: float) -> Tensor:
    """Spikes (``za``'s dtype and strides) of ``LIF(y)`` with ``y = (za - mean_a) * w_a + bias_a``, plus ``zb``
    (``b`` None) or ``(zb - mean_b) * w_b + bias_b``: no ``[T, ...]`` tensor of ``y`` or ``u`` is written.
    The same operations as :func:`bn_affine`, the addition and the LIF recursion (Eq. 1-3), in the compute
    dtype."""
    plan, mode, vecs, flags = _unit_operands("cuda_units.unit_forward", za, a, zb, b)
    spikes = torch.empty_like(za)
    rows = plan.rows // plan.T
    grid, blocks = plan.grid(rows)
    params = _params(za.device, COMPUTE[za.dtype], tau, v_th, 1.0)
    calls["unit_forward"] += 1
    _unit_forward_kernel[grid](za, za if zb is None else zb, *vecs, spikes, params, plan.T, *_steps(plan, rows),
                               **flags, **blocks, **_LAUNCH)
    return spikes


def unit_backward(grad_spikes: Tensor, za: Tensor, a: Affine, zb: Tensor | None, b: Affine | None, tau: float,
                  v_th: float, width: float, surrogate: str, *, sums: bool = False, wide: bool = False):
    """The LIF backward pass of :func:`unit_forward` in one pass: recompute ``y`` and ``u`` per block of neurons
    (the forward pass's operations, so the same ``u``), walk BPTT back in time (Eq. 14-15, 18).

    Returns ``(dL/dy, sums)``: ``dL/dy`` in the compute dtype with ``za``'s strides; with ``sums`` (one input
    only) the per-channel ``(sum(dL/dy), sum(dL/dy * (za - mean_a)))`` the tdBN backward pass needs (float64 with
    ``wide``, else the compute dtype), else None. ``grad_spikes`` has ``za``'s dtype and strides.
    """
    what = "cuda_units.unit_backward"
    plan, mode, vecs, flags = _unit_operands(what, za, a, zb, b)
    if sums and mode != 0:
        raise ValueError(f"{what}: the per-channel sums come with one input only; pass zb=None or sums=False")
    if surrogate not in SURROGATE_IDS:
        raise ValueError(f"{what}: unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATE_IDS)}")
    plan.check_like(what, grad_spikes, "grad_spikes")
    compute = COMPUTE[za.dtype]
    grad_y = torch.empty_like(za, dtype=compute)
    rows = plan.rows // plan.T
    grid, blocks = plan.grid(rows)
    part = torch.empty(grid[2] * grid[1], 2, plan.C, dtype=torch.float64, device=za.device) if sums else grad_y
    params = _params(za.device, compute, tau, v_th, width)
    calls["unit_backward"] += 1
    _unit_backward_kernel[grid](grad_spikes, za, za if zb is None else zb, *vecs, grad_y, params, part, plan.T,
                                *_steps(plan, rows), grid[1], SUMS=sums, SURROGATE=SURROGATE_IDS[surrogate],
                                **flags, **blocks, **_LAUNCH)
    if not sums:
        return grad_y, None
    out = part.sum(0)
    out = out if wide else out.to(compute)
    return grad_y, (out[0], out[1])


__all__ = ["bn_affine", "bn_grad_input", "bn_grad_sums", "bn_stats", "bn_sums", "bptt", "calls", "indexes",
           "integrate", "pack_bits", "unit_backward", "unit_forward", "unpack_bits"]
