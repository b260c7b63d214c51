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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("use_reference", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_a_sequence_continued_from_its_state_equals_the_whole_sequence(dtype, use_reference, k):
    """``lif(x[k:], u0=u[k-1])`` is ``lif(x)[k:]`` bit for bit (spikes and potentials), on the compiled kernels and
    on the reference: the LIF carries its state as Norse's ``(input, state) -> (output, state)``."""
    from tdbn.operators import use_reference as reference_kernels

    x = (torch.randn(6, 3, 5, 4, dtype=torch.float64) * 0.7 + 0.3).to(dtype)
    with reference_kernels(use_reference):
        spikes, u = lif(x, tau=0.3333, v_th=0.5, return_membrane=True)
        rest, u_rest = lif(x[k:], tau=0.3333, v_th=0.5, u0=u[k - 1], return_membrane=True)
    assert torch.equal(rest, spikes[k:]) and torch.equal(u_rest, u[k:])


@pytest.mark.parametrize("surrogate", ["rectangle", "sigmoid"])
def test_the_starting_potential_gets_the_gradient_of_the_step_before(surrogate):
    """The gradients of ``x`` and ``u0`` are those of the sequence ``[u0, x]`` (its first step discarded) with
    respect to ``x`` and to that first step: Eq. 14-15 one step back."""
    x = (torch.randn(5, 2, 64, dtype=torch.float64) * 0.7 + 0.3).requires_grad_()
    u0 = (torch.randn(2, 64, dtype=torch.float64) * 0.7 + 0.3).requires_grad_()
    g = torch.randn(5, 2, 64, dtype=torch.float64)
    kw = dict(tau=0.5, v_th=0.5, surrogate=surrogate, surrogate_width=0.8)
    gx, gu0 = torch.autograd.grad(lif(x, u0=u0, **kw), (x, u0), g)
    seq = torch.cat([u0.detach()[None], x.detach()]).requires_grad_()
    (gseq,) = torch.autograd.grad(lif(seq, **kw)[1:], seq, g)
    torch.testing.assert_close(gx, gseq[1:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gu0, gseq[0], rtol=1e-12, atol=1e-12)


def test_a_starting_potential_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="u0"):
        lif(torch.randn(3, 2, 4), u0=torch.zeros(2, 5))
