"""One LIF step from rest with the rectangle surrogate stores the bits of the surrogate's window, not ``u``
(``tdbn::lif_window_forward``): its spikes and input gradient equal the LIF that stores ``u``, bit for bit, on the
compiled CPU kernels and on the reference, in float64, float32 and bfloat16, with values on the window's edges."""

from __future__ import annotations

import pytest
import torch

import tdbn
from tdbn.operators import use_reference
from tdbn.operators.registration import LIFArgs
from tdbn.operators.unit_ops import lif_forward, lif_op
from tdbn.operators.params import LIFParameters

from saved_tensors import SavedBytes


def _x(dtype, v_th, width, shape=(1, 3, 4, 5, 6)):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * width + v_th)
    flat = x.view(-1)
    eps = torch.finfo(dtype).eps
    edges = [v_th, v_th + width, v_th - width]  # on the threshold, and outside the window
    for edge in (v_th - width / 2, v_th + width / 2):  # on and around the window's edges, a few ulps either side
        edges += [edge * (1 + k * eps) + k * eps for k in range(-4, 5)]
    flat[: len(edges)] = torch.tensor(edges, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v_th,width", [(1.0, 1.0), (0.5, 0.3), (0.3, 2.0)])
def test_window_step_equals_the_step_that_stores_u(reference, dtype, v_th, width):
    p = LIFParameters(tau=0.25, v_th=v_th, surrogate_width=width)
    x = _x(dtype, v_th, width)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    with use_reference(reference):
        xa = x.clone().requires_grad_(True)
        with SavedBytes() as saved:
            spikes = lif_op(xa, p)
        spikes.backward(g)
        xb = x.clone().requires_grad_(True)
        expected, u = lif_forward(xb, None, LIFArgs.of(p), True)
        expected.backward(g)
    assert torch.equal(spikes, expected)
    assert torch.equal(xa.grad, xb.grad)
    assert xa.grad.abs().sum() > 0 and (xa.grad == 0).any()  # inside and outside the window both occur
    assert [t.dtype for t in saved.saved] == [torch.uint8] and saved.saved[0].numel() == (x.numel() + 7) // 8


def test_the_lif_module_takes_it_only_where_it_applies():
    """T = 1 from rest with the rectangle surrogate: the bits; T = 2, another surrogate, a returned membrane or a
    starting potential: ``u`` as before."""
    x1 = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    x2 = torch.randn(2, 2, 3, 4, 4, requires_grad=True)
    cases = [(tdbn.LIF(), x1, [torch.uint8]), (tdbn.LIF(), x2, [torch.float32]),
             (tdbn.LIF(surrogate="atan"), x1, [torch.float32])]
    for lif, x, dtypes in cases:
        with SavedBytes() as saved:
            lif(x)
        assert [t.dtype for t in saved.saved] == dtypes, (lif, x.shape)
    with SavedBytes() as saved:
        tdbn.functional.lif(x1, return_membrane=True)
    assert torch.float32 in [t.dtype for t in saved.saved]


def test_channels_last_input():
    x = torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last).unsqueeze(0)
    p = LIFParameters()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn(x.shape)
    lif_op(xa, p).backward(g)
    lif_forward(xb, None, LIFArgs.of(p), True)[0].backward(g)
    assert torch.equal(xa.grad, xb.grad)
