"""``torch.compile(fullgraph=True)`` traces the units as single operators, without graph breaks, and matches eager
execution; the compiled graph keeps the units (so their storage is theirs)."""

from __future__ import annotations

import copy

import torch
from torch import nn

import tdbn
from tdbn import LIF, TdBatchNorm2d, TdBNLIF, TimeDistributed
from tdbn.layers import Flatten


def _tiny() -> nn.Module:
    return nn.Sequential(
        TdBNLIF(TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)), TdBatchNorm2d(4), LIF()),
        TdBNLIF(TimeDistributed(nn.Conv2d(4, 4, 3, padding=1)), TdBatchNorm2d(4), LIF(), spikes_in=True),
        Flatten(), TimeDistributed(nn.Linear(4 * 5 * 5, 3)),
    )


def _recording_backend(targets: list):
    """A torch.compile backend that records the operators of every traced graph and runs it as traced."""

    def backend(gm: torch.fx.GraphModule, example_inputs):
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    return backend


def _compare(model, ref, x, compiled):
    ref_out = ref(x)
    ref_out.square().sum().backward()
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=n)
    for b, c in zip(model.buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)


def test_compiled_matches_eager_and_keeps_the_units():
    torch.manual_seed(0)
    model = _tiny().double()
    ref = copy.deepcopy(model)
    x = torch.randn(3, 2, 2, 5, 5, dtype=torch.float64)
    targets: list[str] = []
    _compare(model, ref, x, torch.compile(model, fullgraph=True, backend=_recording_backend(targets)))
    assert "tdbn.td_bn_lif_forward" in targets and "tdbn.spike_conv2d" in targets, targets


def test_inductor_matches_eager():
    torch.manual_seed(0)
    model = _tiny().double()
    ref = copy.deepcopy(model)
    _compare(model, ref, torch.randn(3, 2, 2, 5, 5, dtype=torch.float64), torch.compile(model, fullgraph=True))


def test_residual_model_has_no_graph_breaks():
    model = tdbn.models.create("resnet", num_classes=4, depth=8, width=0.0625, timesteps=2)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    targets: list[str] = []
    out = torch.compile(model, fullgraph=True, backend=_recording_backend(targets))(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert "tdbn.td_bn_add_lif_forward" in targets and "tdbn.td_bn_lif_forward" in targets


def test_aot_autograd_traces_forward_and_backward_of_every_unit():
    """AOTAutograd (what Inductor builds on) traces the forward and backward graphs through the operators' fake
    implementations: identity and projection shortcuts, spike inputs kept as bits; equal to eager."""
    torch.manual_seed(0)
    for shortcut_norm in ("all", "projection"):
        model = tdbn.models.create("resnet", num_classes=4, depth=8, width=0.0625, timesteps=2,
                                   shortcut_norm=shortcut_norm).double()
        ref = copy.deepcopy(model)
        _compare(model, ref, torch.randn(2, 3, 16, 16, dtype=torch.float64),
                 torch.compile(model, fullgraph=True, backend="aot_eager"))
