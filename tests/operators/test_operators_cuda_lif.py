"""The Triton LIF kernels equal the reference kernels and autograd over the naive loop (Eq. 1-3, 14-18).

On CUDA the operators run Triton's kernels by default; :func:`tdbn.operators.use_reference` gives the reference.
Without a GPU the same tests run Triton's kernels in its interpreter on CPU tensors (the root conftest sets
``TRITON_INTERPRET=1``), put in place of the CPU's kernels (:func:`tdbn.operators.kernels.for_cpu`), so that the
operators, their autograd and the units run them as they do on CUDA.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

import tdbn  # noqa: E402
from tdbn import LIF, TdBatchNorm2d, TimeDistributed  # noqa: E402
from tdbn.functional import lif, lif_naive  # noqa: E402
from tdbn.functional.surrogate import SURROGATES  # noqa: E402
from tdbn.operators import cuda_lif, cuda_units, kernels, use_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TAUS = [0.0, 0.25, 0.5, 0.9]


@contextmanager
def on(which: str):
    """Inside the block the operators on ``DEVICE`` run ``which`` kernels: ``"triton"`` or ``"reference"``."""
    if which == "reference":
        with use_reference():
            yield
        return
    if DEVICE == "cuda":
        assert kernels.for_cuda() is cuda_units
        yield
        return
    for_cpu, kernels.for_cpu = kernels.for_cpu, lambda: cuda_units
    try:
        yield
    finally:
        kernels.for_cpu = for_cpu


def _run(x, g, which, **kw):
    x = x.detach().clone().requires_grad_(True)
    with on(which):
        spikes, u = lif(x, return_membrane=True, **kw)
        (gx,) = torch.autograd.grad(spikes, x, g)
    return spikes.detach(), u, gx


def _naive(x, g, **kw):
    x = x.detach().clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(lif_naive(x, **kw), x, g)
    return gx


def test_triton_kernels_ran():
    """Sentinel: inside ``on("triton")`` the LIF operator's forward and backward call Triton's kernels."""
    before = dict(cuda_units.calls)
    _run(torch.randn(3, 2, 5, device=DEVICE), torch.ones(3, 2, 5, device=DEVICE), "triton")
    assert cuda_units.calls.get("integrate", 0) == before.get("integrate", 0) + 1
    assert cuda_units.calls.get("bptt", 0) == before.get("bptt", 0) + 1


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_float64_matches_reference_and_naive_loop(tau, surrogate):
    x = torch.randn(7, 3, 5, 4, dtype=torch.float64, device=DEVICE)
    x[2, 0] = 0.5  # exactly at threshold: no spike, surrogate gradient
    g = torch.randn_like(x)
    kw = dict(tau=tau, v_th=0.5, surrogate_width=0.7, surrogate=surrogate)
    s1, u1, g1 = _run(x, g, "triton", **kw)
    s2, u2, g2 = _run(x, g, "reference", **kw)
    assert torch.equal(s1, s2) and torch.equal(u1, u2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(g1, _naive(x, g, **kw), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("T", [1, 2, 60])
def test_float32_forward_is_bit_identical(T):
    x = torch.randn(T, 4, 3000, device=DEVICE)  # 12,000 neurons: several programs, a partial last block
    g = torch.randn_like(x)
    s1, u1, g1 = _run(x, g, "triton", tau=0.9)
    s2, u2, g2 = _run(x, g, "reference", tau=0.9)
    assert torch.equal(s1, s2) and torch.equal(u1, u2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_bfloat16_state_is_the_stored_membrane():
    x = torch.randn(6, 2, 50, device=DEVICE).to(torch.bfloat16)
    s, u, gx = _run(x, torch.ones_like(x), "triton")
    assert s.dtype == u.dtype == gx.dtype == torch.bfloat16
    assert torch.equal(s, (u > 0.5).to(s.dtype))  # spikes follow the rounded u the neuron carries
    # the recursion from the stored u, one bf16 rounding per step: u[t] = round(x[t] + tau * u[t-1] * (1 - o[t-1]))
    # (within one bf16 step: the GPU rounds to nearest even, Triton's interpreter toward zero)
    ref = x[1:].float() + 0.25 * u[:-1].float() * (1 - s[:-1].float())
    torch.testing.assert_close(u[1:].float(), ref, rtol=2.0**-7, atol=0)
    assert torch.isfinite(gx.float()).all()


def test_channels_last_layout_is_kept():
    x = torch.randn(3 * 2, 8, 5, 5, device=DEVICE).to(memory_format=torch.channels_last).view(3, 2, 8, 5, 5)
    g = torch.randn(3, 2, 8, 5, 5, device=DEVICE)
    s1, u1, g1 = _run(x, g, "triton")
    s2, u2, g2 = _run(x.contiguous(), g, "reference")
    assert s1.stride() == x.stride()
    assert torch.equal(s1, s2) and torch.equal(u1, u2)
    torch.testing.assert_close(g1, g2)


def test_recomputed_membrane_path_after_tdbn():
    """A LIF after a tdBN saves no u; the Triton backward rebuilds it in place and writes the gradient over it."""
    grads = {}
    for which in ("reference", "triton"):
        torch.manual_seed(0)
        net = nn.Sequential(
            TimeDistributed(nn.Conv2d(3, 6, 3, padding=1)), TdBatchNorm2d(6), LIF(),
            TimeDistributed(nn.Conv2d(6, 4, 3, padding=1)), TdBatchNorm2d(4), LIF(),
        ).double().to(DEVICE)
        x = torch.randn(4, 2, 3, 6, 6, dtype=torch.float64, device=DEVICE)
        with on(which):
            net(x).mul(torch.arange(4 * 2 * 4 * 36, device=DEVICE).view(4, 2, 4, 6, 6).sin()).sum().backward()
        grads[which] = [p.grad for p in net.parameters()]
    for a, b in zip(grads["reference"], grads["triton"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_resnet_training_step_equals_the_reference():
    def step(which):
        torch.manual_seed(1)
        model = tdbn.models.create("resnet19", width=0.0625, timesteps=2, num_classes=10, input_size=8)
        model = model.double().to(DEVICE)  # float64: the two kernels' sums differ in order, not in any spike
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64, device=DEVICE)
        with on(which):
            loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 4, 9], device=DEVICE))
            loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    before = dict(cuda_units.calls)
    (l1, g1), (l2, g2) = step("reference"), step("triton")
    assert cuda_units.calls["unit_backward"] > before.get("unit_backward", 0)  # the units ran Triton's kernels
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_dense_layout_check():
    dense = cuda_lif.time_major_dense  # shared with the compiled CPU kernels
    x = torch.randn(3, 2, 4, 5)
    assert dense(x) and dense(x.contiguous(memory_format=torch.channels_last))
    assert not dense(x[:, :, ::2]) and not dense(x.transpose(0, 1))



@pytest.mark.parametrize("junction", [False, True])
def test_cuda_implementation_of_the_units_equals_the_reference(junction):
    """The units' CUDA implementation (Triton LIF kernels + plain PyTorch tdBN), run here on the device the
    Triton kernels can reach, equals the reference implementation in float64: spikes, gradients, statistics."""
    from tdbn.operators import kernels as kernel_sets
    from tdbn.operators import reference
    from tdbn.operators import unit_ops as units
    from tdbn.operators.registration import LIFArgs, TdBN, TdBNBatch

    lif = LIFArgs(0.5, 0.4, 0.8, "atan")

    torch.manual_seed(0)
    shape = (4, 3, 5, 4, 4)
    z = (torch.randn(shape, dtype=torch.float64, device=DEVICE) * 0.7 + 0.2)
    zb = (torch.rand(shape, dtype=torch.float64, device=DEVICE) > 0.5).to(torch.float64)
    w = torch.rand(5, dtype=torch.float64, device=DEVICE) + 0.5
    b = torch.randn(5, dtype=torch.float64, device=DEVICE) * 0.1
    g = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    out = {}
    for name, kernels in (("cuda", kernel_sets.for_cuda), ("reference", lambda: reference)):
        if junction:
            s, mean, invstd, *_ = units._junction_forward(z, TdBN(w, b, 0.5), zb, None, False,
                                                          TdBN(None, None, 1.0), 1e-5, lif, "", kernels())
            grads = units._junction_backward(g, z, TdBNBatch(w, b, mean, invstd, 0.5), zb, zb.dtype, False,
                                             TdBNBatch(None, None, mean[:0], invstd[:0], 1.0), lif, "", kernels())
        else:
            s, mean, invstd, var = units._td_bn_lif_forward(z, TdBN(w, b, 0.5), 1e-5, lif, "", kernels())
            grads = units._td_bn_lif_backward(g, z, TdBNBatch(w, b, mean, invstd, 0.5), lif, "", kernels())
        out[name] = (s, mean, invstd, *grads)
    assert torch.equal(out["cuda"][0], out["reference"][0])
    for a, c in zip(out["cuda"][1:], out["reference"][1:]):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)
