"""The hand-written LIF backward equals autograd over the naive loop (Eq. 1-3, 14-18)."""

from __future__ import annotations

import pytest
import torch

import tdbn
from tdbn.functional import lif, lif_naive
from tdbn.functional.surrogate import SURROGATES

TAUS = [0.0, 0.25, 0.5, 0.9]


def _grads(fn, x, g, **kw):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x, **kw)
    (gx,) = torch.autograd.grad(y, x, g)
    return y.detach(), gx


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("shape", [(1, 3, 5), (6, 4, 3, 2, 2), (50, 2, 7)])
def test_matches_naive_loop_float64(tau, shape):
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn(shape, dtype=torch.float64)
    y1, g1 = _grads(lif, x, g, tau=tau)
    y2, g2 = _grads(lif_naive, x, g, tau=tau)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_every_surrogate_matches_naive(surrogate):
    x = torch.randn(8, 3, 4, dtype=torch.float64)
    g = torch.randn(8, 3, 4, dtype=torch.float64)
    y1, g1 = _grads(lif, x, g, tau=0.5, surrogate=surrogate, surrogate_width=0.7)
    y2, g2 = _grads(lif_naive, x, g, tau=0.5, surrogate=surrogate, surrogate_width=0.7)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_large_T():
    x = torch.randn(500, 2, 3, dtype=torch.float64) * 0.4
    g = torch.randn_like(x)
    y1, g1 = _grads(lif, x, g, tau=0.9)
    y2, g2 = _grads(lif_naive, x, g, tau=0.9)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_values_exactly_at_threshold_do_not_fire_but_get_gradient():
    v_th = 0.5
    x = torch.full((3, 1, 4), v_th, dtype=torch.float64)  # u[0] = v_th exactly: strictly greater -> no spike
    x[1:] = 0.0
    g = torch.ones_like(x)
    y1, g1 = _grads(lif, x, g, tau=0.25, v_th=v_th)
    y2, g2 = _grads(lif_naive, x, g, tau=0.25, v_th=v_th)
    assert y1.sum() == 0
    assert torch.equal(y1, y2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
    assert (g1[0] != 0).all()  # |u - v_th| = 0 < a/2: inside the surrogate window


def test_gradcheck():
    # the rectangular surrogate is not the derivative of the forward, so gradcheck compares against the
    # naive loop's analytic gradient instead: check the naive loop's own Jacobian equals ours entry by entry
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    jac1 = torch.autograd.functional.jacobian(lambda z: lif(z, tau=0.5), x)
    jac2 = torch.autograd.functional.jacobian(lambda z: lif_naive(z, tau=0.5), x)
    torch.testing.assert_close(jac1, jac2, rtol=1e-12, atol=1e-12)


def test_hand_trajectory():
    # u: 0.3 -> 0.25*0.3 + 0.3 = 0.375 -> 0.25*0.375 + 0.3 = 0.39375 (v_th 0.39: fires) -> reset: 0 + 0.3
    x = torch.full((4, 1), 0.3, dtype=torch.float64)
    s, u = lif(x, tau=0.25, v_th=0.39, return_membrane=True)
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    torch.testing.assert_close(u.flatten(), torch.tensor([0.3, 0.375, 0.39375, 0.3], dtype=torch.float64))


def test_dtype_and_values():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        s = lif(torch.randn(3, 4, 5).to(dtype))
        assert s.dtype == dtype
        assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_module_wraps_functional():
    m = tdbn.LIF(tau=0.5, v_th=0.3, surrogate_width=0.5)
    x = torch.randn(5, 2, 3)
    assert torch.equal(m(x), lif(x, tau=0.5, v_th=0.3, surrogate_width=0.5))
    s, u = m.forward_with_membrane(x)
    assert torch.equal(s, m(x)) and u.shape == x.shape


def test_no_state_leaks_between_calls():
    m = tdbn.LIF()
    x = torch.randn(4, 2, 3)
    assert torch.equal(m(x), m(x))


def test_saves_one_tensor_for_backward():
    x = torch.randn(4, 3, 8, requires_grad=True)
    y = lif(x)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 1 and saved[0].shape == x.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [({"tau": 1.0}, "tau"), ({"tau": -0.1}, "tau"), ({"v_th": 0.0}, "v_th"), ({"surrogate_width": 0.0}, "surrogate_width"),
     ({"surrogate": "nope"}, "surrogate")],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lif(torch.randn(2, 2), **kwargs)
    with pytest.raises(ValueError, match=match):
        tdbn.LIF(**kwargs)


def test_bad_layout():
    with pytest.raises(ValueError, match=r"\[T, N, \.\.\.\]"):
        lif(torch.randn(5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_spikes_without_stored_membrane_are_bit_identical(dtype, T):
    """Without ``return_membrane`` and without a saved ``u`` (inference; training after a tdBN), the forward
    pass keeps only two step-sized buffers; the spikes must equal those of the full recursion."""
    x = (torch.randn(T, 3, 4, 5, 5) * 0.7 + 0.3).to(dtype)
    full, u = lif(x, tau=0.9, return_membrane=True)
    assert u.shape == x.shape
    with torch.no_grad():
        rolled = lif(x, tau=0.9)
    assert torch.equal(rolled, full)
    bn = tdbn.TdBatchNorm2d(4).to(dtype)
    z = torch.randn(T, 3, 4, 5, 5, dtype=dtype, requires_grad=True)
    s_lean = lif(bn(z), tau=0.9)  # u recomputed in backward: not stored in forward either
    s_full, _ = lif(bn(z), tau=0.9, return_membrane=True)
    assert torch.equal(s_lean, s_full)
    g = torch.randn_like(s_full)
    (g1,) = torch.autograd.grad(s_lean, z, g)
    (g2,) = torch.autograd.grad(s_full, z, g)
    assert torch.equal(g1, g2)
