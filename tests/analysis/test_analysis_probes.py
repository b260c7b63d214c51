"""Hooks see every layer, remove themselves, leave the output and the training mode unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tdbn.analysis import calibrate_norm_stats, forward_hooks, inference, lif_layers, snn_ops, spikes_per_neuron
from tdbn.analysis.probes import io_layers, synaptic_layers
from tdbn.layers import LIF
from tdbn.models import create


def _tiny(arch: str = "resnet") -> nn.Module:
    return create(arch, num_classes=4, depth=8, width=0.0625, timesteps=2)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ["plain", "resnet"])
def test_hooks_see_every_layer_and_leave_output_unchanged(arch):
    net = _tiny(arch).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
    seen: list[str] = []
    layers = lif_layers(net) + synaptic_layers(net)
    with inference(net), forward_hooks(layers, lambda name, m, i, o: seen.append(name)):
        out = net(x)
    assert sorted(seen) == sorted(name for name, _ in layers)  # each layer called exactly once
    assert len(lif_layers(net)) == sum(isinstance(m, LIF) for m in net.modules())
    assert torch.equal(out, ref)
    assert _hook_count(net) == 0


def test_hooks_removed_when_forward_raises():
    net = _tiny()
    with pytest.raises(ValueError, match="expected static images"):
        with forward_hooks(synaptic_layers(net), lambda *a: None):
            assert _hook_count(net) > 0
            net(torch.randn(2, 5, 16, 16))  # wrong channel count
    assert _hook_count(net) == 0


def test_probes_restore_training_mode_and_output():
    net = _tiny().train()
    net.body.stage1.eval()  # a mixed state must come back as it was
    modes = [m.training for m in net.modules()]
    x = torch.rand(2, 3, 16, 16)
    spikes_per_neuron(net, x)
    snn_ops(net, x)
    assert [m.training for m in net.modules()] == modes
    assert _hook_count(net) == 0
    net.eval()
    with torch.no_grad():
        a = net(x)
    spikes_per_neuron(net, x)
    with torch.no_grad():
        assert torch.equal(net(x), a)


def test_io_layers_and_clear_error_for_other_models():
    net = _tiny()
    enc, dec = io_layers(net)
    assert enc is net.encoder.conv.module and dec is net.decoder.module
    with pytest.raises(TypeError, match="SpikingNet"):
        io_layers(nn.Linear(2, 2))


def test_calibration_sets_statistics_and_keeps_weights():
    net = _tiny().eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    x = torch.randn(4, 3, 16, 16) * 3 + 1
    calibrate_norm_stats(net, x)
    assert not net.training and net.encoder.bn.momentum == 0.1
    conv_out = net.encoder.conv.module(x)  # [N, C, H, W]
    torch.testing.assert_close(net.encoder.bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
