"""The Triton tdBN and unit kernels equal the compiled CPU kernels and the plain PyTorch reference (Eq. 1-3, 5-8,
14-18).

Without a GPU the kernels run in Triton's interpreter on CPU tensors (the root conftest sets
``TRITON_INTERPRET=1``); on a CUDA machine the same tests run the compiled kernels on the GPU, against the CPU
kernels on copies. Bit-identical where the arithmetic is the same (the affine, the spikes and the membrane
potentials of float32 and float64, the rectangle surrogate's BPTT); float64 sums in another order, other
surrogates and 16-bit roundings agree to rounding.
"""

from __future__ import annotations

import pytest
import torch

import tdbn
from tdbn.operators import cpu as native
from tdbn.operators import cuda_units, kernels, reference
from tdbn.operators import unit_ops as units
from tdbn.operators.registration import LIFArgs, TdBN, TdBNBatch
from tdbn.functional.surrogate import SURROGATES

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = (3, 2, 5, 3, 7)  # [T, N, C, H, W]: odd sizes, partial blocks
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-13), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def _z(dtype, channels_last: bool, shape=SHAPE, scale=1.0):
    z = torch.randn(shape, dtype=torch.float64) * scale + 0.2
    if channels_last:
        T, N = shape[:2]
        z = z.view(T * N, *shape[2:]).contiguous(memory_format=torch.channels_last).view(shape)
    return z.to(dtype).to(DEVICE)


def _like(z, values, dtype=None):
    """``values`` with ``z``'s strides and device (in ``dtype``)."""
    return torch.empty_like(z, dtype=dtype or z.dtype).copy_(values)


def _cpu(*ts):
    return [None if t is None else t.cpu() for t in ts]


def _vectors(C, dtype):
    torch.manual_seed(1)
    w = (torch.rand(C, dtype=dtype) + 0.5).to(DEVICE)
    b = (torch.randn(C, dtype=dtype) * 0.2).to(DEVICE)
    return w, b


def _assert_equal(a, b):
    a, b = a.cpu(), b.cpu()
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b), (a.double() - b.double()).abs().max().item()


@pytest.fixture(autouse=True)
def _compiled_cpu_kernels():
    assert native.available(), native.status()  # the reference these tests compare with


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_tdbn_kernels_equal_the_cpu_kernels(dtype, channels_last):
    z = _z(dtype, channels_last)
    zc = z.cpu()
    cd = cuda_units.COMPUTE[dtype]
    tol = TOL[cd]
    mean, var = cuda_units.bn_stats(z)
    mean_c, var_c = native.bn_stats(zc)
    assert mean.dtype == var.dtype == cd
    torch.testing.assert_close(mean.cpu(), mean_c, **tol)  # float64 sums, another order
    torch.testing.assert_close(var.cpu(), var_c, **tol)
    torch.testing.assert_close(cuda_units.bn_sums(z).cpu(), native.bn_sums(zc), rtol=1e-12, atol=1e-12)

    w, b = _vectors(z.shape[2], cd)
    for bias in (b, None):
        y = cuda_units.bn_affine(z, mean_c.to(DEVICE), w, bias)
        assert y.stride() == z.stride() and y.dtype == cd
        _assert_equal(y, native.bn_affine(zc, mean_c, *_cpu(w, bias)))  # each operation rounded, no fma

    g = _like(z, torch.randn(z.shape, dtype=cd), cd)
    for wide in (False, True):
        sums = cuda_units.bn_grad_sums(g, z, mean_c.to(DEVICE), wide=wide)
        ref = native.bn_grad_sums(g.cpu(), zc, mean_c, wide=wide)
        for s, r in zip(sums, ref):
            assert s.dtype == r.dtype
            torch.testing.assert_close(s.cpu(), r, **TOL[r.dtype])

    k, c0, cx = (torch.randn(z.shape[2], dtype=cd).to(DEVICE) for _ in range(3))
    gz = cuda_units.bn_grad_input(g, z, mean_c.to(DEVICE), k, c0, cx)
    ref = native.bn_grad_input(g.cpu(), zc, mean_c, *_cpu(k, c0, cx))
    assert gz.dtype == dtype and gz.stride() == z.stride()
    if dtype == torch.bfloat16:  # rounded once; Triton's interpreter rounds toward zero, the GPU to nearest even
        torch.testing.assert_close(gz.cpu().float(), ref.float(), rtol=2.0**-7, atol=0)
    else:
        _assert_equal(gz, ref)
        assert cuda_units.bn_grad_input(g, z, mean_c.to(DEVICE), k, c0, cx, out=g) is g  # in place over g
        _assert_equal(g, ref)


def _affines(z, mean, w, b, mode):
    """``a``, ``zb`` and ``b`` of a unit of ``mode`` (0: one input; 1: unnormalized zb; 2: normalized zb)."""
    a = (mean, w, b)
    if mode == 0:
        return a, None, None
    zb = _like(z, torch.randn(z.shape, dtype=torch.float64).to(z.dtype))
    if mode == 1:
        return a, (zb > 0.3).to(z.dtype), None  # spikes, as an identity shortcut adds
    return a, zb, (mean * 0.5, w.flip(0), None)  # the shortcut's tdBN without bias


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["td_bn_lif", "identity_junction", "junction"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_unit_kernels_equal_the_cpu_kernels(dtype, channels_last, mode):
    z = _z(dtype, channels_last, scale=0.7)
    cd = cuda_units.COMPUTE[dtype]
    mean = z.to(cd).mean((0, 1, 3, 4))
    w, bias = _vectors(z.shape[2], cd)
    a, zb, b = _affines(z, mean, w, bias, mode)
    gs = _like(z, torch.randn(z.shape, dtype=torch.float64).to(dtype))
    tau, v_th = 0.5, 0.3
    spikes = cuda_units.unit_forward(z, a, zb, b, tau, v_th)
    ref = native.unit_forward(z.cpu(), _cpu(*a), *_cpu(zb), None if b is None else _cpu(*b), tau, v_th)
    assert spikes.stride() == z.stride() and 0 < spikes.float().mean() < 1
    _assert_equal(spikes, ref)  # the same y and u, bit for bit

    args = (tau, v_th, 0.8, "rectangle")
    grad_y, sums = cuda_units.unit_backward(gs, z, a, zb, b, *args, sums=mode == 0)
    ref_y, ref_sums = native.unit_backward(gs.cpu(), z.cpu(), _cpu(*a), *_cpu(zb), None if b is None else _cpu(*b),
                                           *args, sums=mode == 0)
    assert grad_y.dtype == cd and grad_y.stride() == z.stride()
    _assert_equal(grad_y, ref_y)  # recomputed u, the same two fused multiply-adds per step
    assert grad_y.abs().sum() > 0
    if mode == 0:
        for s, r in zip(sums, ref_sums):
            torch.testing.assert_close(s.cpu(), r, **TOL[cd])
    else:
        assert sums is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_every_surrogate_and_the_wide_sums(surrogate, dtype):
    z = _z(dtype, False, shape=(6, 2, 3, 5), scale=0.5)  # [T, N, C, L]
    mean = z.mean((0, 1, 3))
    w, bias = _vectors(3, dtype)
    gs = _like(z, torch.randn(z.shape, dtype=dtype))
    args = (0.9, 0.25, 0.7, surrogate)
    grad_y, sums = cuda_units.unit_backward(gs, z, (mean, w, bias), None, None, *args, sums=True, wide=True)
    ref_y, ref_sums = native.unit_backward(gs.cpu(), z.cpu(), _cpu(mean, w, bias), None, None, *args,
                                           sums=True, wide=True)
    torch.testing.assert_close(grad_y.cpu(), ref_y, **TOL[dtype])
    for s, r in zip(sums, ref_sums):
        assert s.dtype == torch.float64
        torch.testing.assert_close(s.cpu(), r, **TOL[dtype])


@pytest.mark.parametrize("shape", [(1, 4, 6), (9, 1, 2, 1, 1)], ids=["T1_NC", "T9_1x1"])
def test_edge_shapes(shape):
    """One step; many steps over a 1x1 map (C innermost in both layouts)."""
    z = _z(torch.float64, False, shape=shape)
    mean, var = cuda_units.bn_stats(z)
    torch.testing.assert_close(torch.stack([mean, var]).cpu(), torch.stack(native.bn_stats(z.cpu())))
    w, bias = _vectors(shape[2], torch.float64)
    a = (mean, w, bias)
    _assert_equal(cuda_units.unit_forward(z, a, None, None, 0.25, 0.5),
                  native.unit_forward(z.cpu(), _cpu(*a), None, None, 0.25, 0.5))
    gs = torch.randn_like(z)
    got = cuda_units.unit_backward(gs, z, a, None, None, 0.25, 0.5, 1.0, "atan", sums=True)
    ref = native.unit_backward(gs.cpu(), z.cpu(), _cpu(*a), None, None, 0.25, 0.5, 1.0, "atan", sums=True)
    torch.testing.assert_close(got[0].cpu(), ref[0], **TOL[torch.float64])
    torch.testing.assert_close(torch.stack(got[1]).cpu(), torch.stack(ref[1]), **TOL[torch.float64])


def test_float16_is_the_float32_unit_on_the_rounded_input():
    """float16 storage (the CPU kernels take no float16): read exactly into float32, so the float32 kernels on the
    float32 copy give the same spikes and dL/dy; the input gradient is rounded once."""
    z = _z(torch.float16, True, scale=0.7)
    z32 = z.float()
    mean, var = cuda_units.bn_stats(z)
    ref_mean, ref_var = native.bn_stats(z32.cpu())
    torch.testing.assert_close(torch.stack([mean, var]).cpu(), torch.stack([ref_mean, ref_var]), **TOL[torch.float32])
    w, bias = _vectors(z.shape[2], torch.float32)
    a, zb, b = _affines(z, mean, w, bias, 2)
    spikes = cuda_units.unit_forward(z, a, zb, b, 0.5, 0.3)
    assert spikes.dtype == torch.float16
    _assert_equal(spikes.float(), cuda_units.unit_forward(z32, a, zb.float(), b, 0.5, 0.3))
    gs = (torch.rand_like(z32) - 0.5).to(torch.float16)
    grad_y, _ = cuda_units.unit_backward(gs, z, a, zb, b, 0.5, 0.3, 0.8, "rectangle")
    ref_y, _ = native.unit_backward(*_cpu(gs.float(), z32), _cpu(*a), zb.float().cpu(), _cpu(*b), 0.5,
                                    0.3, 0.8, "rectangle")
    _assert_equal(grad_y, ref_y)
    k, c0, cx = (torch.randn(z.shape[2]).to(DEVICE) for _ in range(3))
    gz = cuda_units.bn_grad_input(grad_y, z, mean, k, c0, cx)
    ref = native.bn_grad_input(*_cpu(grad_y, z32, mean, k, c0, cx))
    assert gz.dtype == torch.float16
    torch.testing.assert_close(gz.cpu().float(), ref, rtol=2.0**-10, atol=2.0**-24)


LIF = LIFArgs(0.5, 0.4, 0.8, "atan")


def _unit_results(kernel_set, junction: bool, dtype=torch.float64):
    """Spikes, statistics and gradients of a unit through ``units``' implementation with ``kernel_set``."""
    torch.manual_seed(0)
    shape = (4, 3, 5, 4, 4)
    z = (torch.randn(shape, dtype=torch.float64) * 0.7 + 0.2).to(dtype).to(DEVICE)
    zb = (torch.rand(shape, dtype=torch.float64) > 0.5).to(dtype).to(DEVICE)
    w = torch.rand(5, dtype=torch.float64, device=DEVICE) + 0.5
    b = torch.randn(5, dtype=torch.float64, device=DEVICE) * 0.1
    g = torch.randn(shape, dtype=torch.float64).to(dtype).to(DEVICE)
    if junction:
        s, mean, invstd, *_ = units._junction_forward(z, TdBN(w, b, 0.5), zb, None, False, TdBN(None, None, 1.0),
                                                      1e-5, LIF, "", kernel_set)
        grads = units._junction_backward(g, z, TdBNBatch(w, b, mean, invstd, 0.5), zb, zb.dtype, False,
                                         TdBNBatch(None, None, mean[:0], invstd[:0], 1.0), LIF, "", kernel_set)
    else:
        s, mean, invstd, var = units._td_bn_lif_forward(z, TdBN(w, b, 0.5), 1e-5, LIF, "", kernel_set)
        grads = units._td_bn_lif_backward(g, z, TdBNBatch(w, b, mean, invstd, 0.5), LIF, "", kernel_set)
    return (s, mean, invstd, *grads)


@pytest.mark.parametrize("junction", [False, True], ids=["td_bn_lif", "junction"])
def test_units_on_these_kernels_equal_the_reference(junction):
    """The units' own call sites on these kernels (the CUDA implementation of the operators; here on the device
    Triton reaches): spikes, statistics and gradients equal the plain PyTorch reference in float64; the sentinel
    proves the Triton kernels ran."""
    ref = _unit_results(reference, junction)
    before = dict(cuda_units.calls)
    got = _unit_results(cuda_units, junction)
    ran = {k: v - before.get(k, 0) for k, v in cuda_units.calls.items() if v > before.get(k, 0)}
    expected = {"bn_stats", "unit_forward", "unit_backward"} | ({"bn_grad_sums"} if junction else set())
    assert expected | {"bn_grad_input"} <= set(ran), ran
    _assert_equal(got[0], ref[0])
    for a, c in zip(got[1:], ref[1:]):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)


def test_model_training_step_on_these_kernels(monkeypatch):
    """A small ResNet-19 training step with every unit on these kernels equals the step on the compiled CPU
    kernels (on a GPU: the same step on the CPU), to rounding."""
    def step(device):
        torch.manual_seed(1)
        model = tdbn.models.create("resnet19", width=0.0625, timesteps=2, num_classes=10, input_size=8).to(device)
        x = torch.randn(2, 3, 8, 8).to(device)
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 4], device=device))
        loss.backward()
        return loss.detach().cpu(), [p.grad.cpu() for p in model.parameters()]

    l1, g1 = step("cpu")  # the compiled CPU kernels
    before = cuda_units.calls["unit_backward"]
    with monkeypatch.context() as m:  # without a GPU: the operators' CPU registrations run these kernels
        m.setattr(kernels, "for_cpu", lambda: cuda_units)
        l2, g2 = step(DEVICE)
    assert kernels.for_cpu() is not cuda_units  # restored after the block
    assert cuda_units.calls["unit_backward"] - before >= 16  # every unit of the network (17)
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-6)
    for a, c in zip(g2, g1):
        torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-4)


def test_bad_operands_raise_one_clear_line(monkeypatch):
    z = _z(torch.float32, False)
    mean, w = torch.zeros(5, device=DEVICE), torch.ones(5, device=DEVICE)
    with pytest.raises(ValueError, match="float32.*got torch.int64.*float"):
        cuda_units.bn_stats(torch.ones(2, 2, 3, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="neither contiguous nor channels-last.*contiguous()"):
        cuda_units.bn_sums(z.transpose(3, 4))
    with pytest.raises(ValueError, match=r"\[T, N, C, \.\.\.\]"):
        cuda_units.bn_stats(torch.ones(4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="zb .*must be torch.float32 with the shape"):
        cuda_units.unit_forward(z, (mean, w, None), z[:, :1], None, 0.5, 0.5)
    with pytest.raises(ValueError, match="w_a has 4 values for 5 channels"):
        cuda_units.unit_forward(z, (mean, w[:4], None), None, None, 0.5, 0.5)
    with pytest.raises(ValueError, match="one input only"):
        cuda_units.unit_backward(z, z, (mean, w, None), z, None, 0.5, 0.5, 1.0, "rectangle", sums=True)
    with pytest.raises(ValueError, match="unknown surrogate 'box'"):
        cuda_units.unit_backward(z, z, (mean, w, None), None, None, 0.5, 0.5, 1.0, "box")
    with pytest.raises(ValueError, match="g .*must be torch.float32"):
        cuda_units.bn_grad_sums(z.double(), z, mean)
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="bn_stats: runs on CUDA tensors.*tdbn.operators.cpu"):
            cuda_units.bn_stats(z)


def test_small_tiles_and_few_programs(monkeypatch):
    """Another tiling: one channel and part of a row per program (two column blocks), programs looping over
    the rows (grid-stride: one or two per column block), several partial sums per channel."""
    monkeypatch.setattr(cuda_units, "ELEMENTS", 16)
    monkeypatch.setattr(cuda_units, "MAX_PROGRAMS", 2)
    for channels_last in (False, True):
        test_tdbn_kernels_equal_the_cpu_kernels(torch.float32, channels_last)
        test_unit_kernels_equal_the_cpu_kernels(torch.float64, channels_last, 0)
