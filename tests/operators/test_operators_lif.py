"""The fast LIF kernels equal the naive loop bit for bit in the forward pass, in every float type they take."""

from __future__ import annotations

import pytest
import torch

from tdbn.functional import lif, lif_naive
from tdbn.operators.recursions import lif_forward_reference


def _naive_membrane(x: torch.Tensor, tau: float, v_th: float) -> torch.Tensor:
    u = torch.zeros_like(x[0])
    o = torch.zeros_like(x[0])
    us = []
    for t in range(x.shape[0]):
        u = tau * u * (1 - o) + x[t]
        o = (u > v_th).to(x.dtype)
        us.append(u)
    return torch.stack(us)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tau", [0.0, 0.25, 0.3333, 0.9])
def test_membrane_and_spikes_bit_exact(dtype, tau):
    x = (torch.randn(7, 4096) * 0.7 + 0.2).to(dtype)
    spikes, u = lif_forward_reference(x, tau, 0.5)
    assert torch.equal(u, _naive_membrane(x, tau, 0.5))
    assert torch.equal(spikes, lif_naive(x, tau=tau))


@pytest.mark.parametrize("width", [1.0, 0.4])
def test_float32_gradients_close_to_naive(width):
    x = (torch.randn(6, 3, 512) * 0.6 + 0.2).requires_grad_()
    g = torch.randn(6, 3, 512)
    (g1,) = torch.autograd.grad(lif(x, tau=0.5, surrogate_width=width), x, g)
    (g2,) = torch.autograd.grad(lif_naive(x, tau=0.5, surrogate_width=width), x, g)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_strided_and_expanded_inputs():
    base = torch.randn(3, 5, 4, dtype=torch.float64)
    for x in (base.transpose(1, 2), base[:1].expand(3, 5, 4)):
        xs = x.detach().requires_grad_()
        xc = x.contiguous().requires_grad_()
        s1, s2 = lif(xs), lif(xc)
        assert torch.equal(s1, s2)
        g = torch.randn_like(s1)
        torch.testing.assert_close(torch.autograd.grad(s1, xs, g)[0], torch.autograd.grad(s2, xc, g)[0])
