"""``torch.compile`` runs tdbn models without graph breaks and matches eager execution."""

from __future__ import annotations

import copy
import importlib

import torch
from torch import nn

import tdbn
from tdbn import LIF, TdBatchNorm2d, TimeDistributed
from tdbn.layers import Flatten

# the submodule (``tdbn.functional.lif`` as an attribute is the function of that name)
lif_module = importlib.import_module("tdbn.functional.lif")


def _tiny() -> nn.Module:
    return nn.Sequential(
        TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)), TdBatchNorm2d(4), LIF(),
        Flatten(), TimeDistributed(nn.Linear(4 * 5 * 5, 3)),
    )


def test_compiled_matches_eager(monkeypatch):
    torch.manual_seed(0)
    model = _tiny().double()
    ref = copy.deepcopy(model)
    x = torch.randn(3, 2, 2, 5, 5, dtype=torch.float64)
    ref_out = ref(x)
    ref_out.square().sum().backward()

    def eager_kernel(*args):
        raise AssertionError("the eager LIF kernel was traced; torch.compile should take the traced kernels")

    with monkeypatch.context() as m:  # sentinel: compilation must go through _integrate_traced / _bptt_traced
        m.setattr(lif_module, "_integrate", eager_kernel)
        m.setattr(lif_module, "_bptt", eager_kernel)
        out = torch.compile(model, fullgraph=True)(x)
        out.square().sum().backward()
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=n)
    for b, c in zip(model.buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)


def test_residual_model_has_no_graph_breaks():
    model = tdbn.models.create("resnet", num_classes=4, depth=8, width=0.0625, timesteps=2)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_traced_kernels_equal_eager_kernels():
    x = torch.randn(6, 3, 7, dtype=torch.float64) * 0.6 + 0.2
    s1, u1 = lif_module._integrate_traced(x, 0.25, 0.5)
    s2, u2 = lif_module.lif_forward_reference(x, 0.25, 0.5)
    assert torch.equal(s1, s2) and torch.equal(u1, u2)
    g = torch.randn_like(x)
    for surrogate in ("rectangle", "atan"):
        torch.testing.assert_close(
            lif_module._bptt_traced(g, u1, 0.25, 0.5, 0.7, surrogate),
            lif_module._bptt(g, u1, 0.25, 0.5, 0.7, surrogate), rtol=1e-13, atol=1e-14,
        )
