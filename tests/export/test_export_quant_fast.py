"""The integer network on float32 kernels (``tdbn.export.quant_fast``): bit for bit the int64 simulation (spikes and
outputs, every node) on trained and random networks, float32 exactly where the bound proves it, float64 or the int64
path where it does not (``kernel_counts`` shows which ran), said once."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TimeDistributed
from tdbn.export.quant import image_input_scale, quantize
from tdbn.export.quant_fast import EXACT


def _same_as_reference(net, x) -> dict[str, str]:
    """Assert ``forward_nodes_fast`` == ``forward_nodes`` at every node and ``net(x)`` == the reference's scores;
    returns the kernel each conv / fc / LIF layer ran on in this call."""
    net.kernel_counts.clear()
    ref = net.forward_nodes(x)
    fast = net.forward_nodes_fast(x)
    assert set(fast) == set(ref)
    for name, v in ref.items():
        assert fast[name].dtype == torch.int64 and fast[name].shape == v.shape, name
        assert torch.equal(fast[name], v), name
    out = ref["output"].sum(0).to(torch.float64) * (net.nodes[net.nodes["output"].sources[0]].scale / v.shape[0])
    assert torch.equal(net(x), out)
    kernels = {name: kernel for (name, kernel) in net.kernel_counts}
    assert len(kernels) == len(net.kernel_counts)  # each layer on one path
    return kernels


def _layers(net) -> set[str]:
    return {n for n, node in net.nodes.items() if node.kind in ("conv", "fc", "lif")}


def _trained(trained_run: Path, bits: int, **kw):
    opts = tdbn.saved_config(trained_run).data.options
    scale = image_input_scale(opts["mean"], opts["std"], input_bits=kw.get("input_bits", 8))
    return quantize(tdbn.load(trained_run), bits=bits, input_shape=(1, 8, 8), input_scale=scale, **kw)


def test_plan_by_hand():
    fc = nn.Linear(2, 1)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.3, -0.4]]))
        fc.bias.fill_(0.1)
    net = quantize(nn.Sequential(TimeDistributed(fc), LIF(tau=0.25, v_th=0.5)).eval(), bits=8, input_shape=(2,),
                   input_scale=1.0)
    # Theta = round(127 * 0.5 / 0.4) = 159, s = 0.5 / 159: W = round(0.3 / s) = 95, -127; b = round(0.1 / s) = 32
    assert net.nodes["0"].weight.tolist() == [[95, -127]] and net.nodes["0"].bias.tolist() == [32]
    plan = net.plan(input_range=10, timesteps=3)
    assert plan["0"].kernel == "float32" and plan["0"].bound == (95 + 127) * 10 + 32  # 2252
    # membrane over T = 3 steps with tau = 1/4 (m = 1, q = 2): numerator over 2^-4 at most 2252 (2^4 + 2^2 + 1)
    assert plan["1"].kernel == "float32" and plan["1"].bound == 2252 * 21
    plan = net.plan(input_range=(EXACT - 32) // 222 + 1, timesteps=3)  # partial sums reach 2^24: float64
    assert plan["0"].kernel == "float64" and plan["0"].bound >= EXACT and "2^24" in plan["0"].reason
    plan = net.plan(input_range=1, timesteps=40)  # the membrane's 78 fraction bits: beyond float64's 53
    assert plan["1"].kernel == "int64" and plan["1"].bound == 254 * sum(4 ** k for k in range(40))


@pytest.mark.parametrize("bits,per_channel", [(8, False), (4, False), (8, True)])
def test_trained_network_all_float32(trained_run: Path, all_test_digits, bits: int, per_channel: bool):
    x, _ = all_test_digits
    net = _trained(trained_run, bits, per_channel=per_channel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layer falls back: no warning
        kernels = _same_as_reference(net, x)
    assert kernels == dict.fromkeys(_layers(net), "float32")
    frames = net.quantize_input(x).float().unsqueeze(0).expand(net.timesteps, *x.shape)  # [T, N, ...] integers
    assert _same_as_reference(net, frames) == kernels


def test_trained_network_at_16_bits_mixes_the_paths(trained_run: Path, test_digits):
    """16-bit weights on a 16-bit input: the encoding layer's partial sums reach 2^31 (float64, with its LIF), the
    layers fed by spikes stay below 2^24 (float32); the result is the int64 simulation's either way."""
    x, _ = test_digits
    net = _trained(trained_run, 16, input_bits=16)
    with pytest.warns(UserWarning, match=r"off float32 .*encoder\.conv on float64: partial sums up to \d+"):
        kernels = _same_as_reference(net, x)
    slow = {n for n, k in kernels.items() if k != "float32"}
    assert {"encoder.conv", "encoder.lif"} <= slow and slow != _layers(net)
    assert set(kernels.values()) == {"float32", "float64"}
    assert slow == {n for n, p in net.plan().items() if p.kernel != "float32"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        _same_as_reference(net, x)


def test_a_layer_beyond_float32_runs_in_float64():
    """A 600-input fc layer with 16-bit weights and inputs: its sums reach 2^34, beyond float32's integers, so no
    float32 kernel could give them; it and its LIF run in float64, the decoder (fed by spikes) in float32."""
    torch.manual_seed(0)
    model = nn.Sequential(TimeDistributed(nn.Linear(600, 8)), LIF(tau=0.25, v_th=0.5),
                          TimeDistributed(nn.Linear(8, 3))).eval()
    with torch.no_grad():
        model[0].module.weight.mul_(20)  # enough current that the LIF fires
    net = quantize(model, bits=16, input_shape=(600,), input_scale=1 / 32767, input_bits=16)
    x = torch.rand(3, 5, 600) * 2 - 1  # frames [T, N, 600] in [-1, 1]: integers up to 32767
    with pytest.warns(UserWarning, match=r"off float32 .*0 on float64: partial sums .*; 1 on float64: membrane") \
            as record:
        kernels = _same_as_reference(net, x)
    assert len(record) == 1
    assert kernels == {"0": "float64", "1": "float64", "2": "float32"}
    assert net.kernel_counts == {("0", "float64"): 2, ("1", "float64"): 2, ("2", "float32"): 2}  # forward, net(x)
    sums = net.forward_nodes(x)["0"]
    assert sums.abs().max() >= EXACT and not torch.equal(sums.to(torch.float32).to(torch.int64), sums)
    assert net.forward_nodes(x)["1"].any()  # spikes reach the float32 decoder


def test_a_membrane_beyond_float64_runs_on_int64():
    """16 steps of tau = 1/4 give the membrane 30 fraction bits; with currents near 2^25 its numerators reach 2^55,
    beyond float64's 2^53: that LIF runs on the int64 path, the layer before it (sums near 2^25) in float64, the
    decoder (fed by spikes) in float32: three paths in one network, the int64 simulation's integers throughout."""
    torch.manual_seed(0)
    model = nn.Sequential(TimeDistributed(nn.Linear(16, 4)), LIF(tau=0.25, v_th=0.5),
                          TimeDistributed(nn.Linear(4, 3))).eval()
    net = quantize(model, bits=16, input_shape=(16,), input_scale=1 / 127)
    x = torch.rand(16, 5, 16) * 2 - 1  # frames [T = 16, N, 16]
    with pytest.warns(UserWarning, match=r"1 on int64: membrane numerators up to \d+ \(units of 2\^-30"):
        kernels = _same_as_reference(net, x)
    assert kernels == {"0": "float64", "1": "int64", "2": "float32"}
    assert net.plan(timesteps=16)["1"].bound >= 2 ** 53


@pytest.mark.parametrize("name,kw", [
    ("resnet19", {"input_size": 8}),
    ("resnet19", {"input_size": 8, "residual": "membrane"}),
    ("plain", {"depth": 5, "tau": 0.5}),
    ("plain", {"depth": 5, "tau": 0.75}),
    ("plain", {"depth": 5, "tau": 0.0}),
])
def test_random_networks(name: str, kw: dict):
    torch.manual_seed(1)
    model = tdbn.models.create(name, num_classes=5, width=1 / 16, timesteps=3, **kw).eval()
    with torch.no_grad():  # weights large enough that most layers fire
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3)
    x = torch.randn(12, 3, 8, 8)
    for bits in (8, 5):
        net = quantize(model, bits=bits, input_shape=(3, 8, 8), input_scale=0.02)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            kernels = _same_as_reference(net, x)
        assert set(kernels.values()) == {"float32"}
        assert sum(int(v.sum()) for n, v in net.forward_nodes(x).items() if net.nodes[n].kind == "lif") > 0


def test_event_frames_take_the_range_of_the_batch():
    """Integer event counts (input_scale 1): the plan takes the batch's largest count; counts too large for float32
    partial sums move the first layer to the int64 path, the same integers either way."""
    torch.manual_seed(2)
    model = tdbn.models.create("plain", num_classes=4, depth=5, width=1 / 16, timesteps=4, in_channels=2).eval()
    net = quantize(model, bits=8, input_shape=(2, 8, 8), input_scale=1.0)
    frames = torch.randint(0, 4, (4, 6, 2, 8, 8)).float()  # [T, N, C, H, W] event counts
    assert set(_same_as_reference(net, frames).values()) == {"float32"}
    big = frames * 2 ** 14
    with pytest.warns(UserWarning, match="off float32"):
        kernels = _same_as_reference(net, big)
    first = next(n for n, node in net.nodes.items() if node.kind == "conv")
    assert kernels[first] == "float64"


def test_reduced_float32_precision_takes_float64(trained_run: Path, test_digits):
    x, _ = test_digits
    net = _trained(trained_run, 8)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with pytest.warns(UserWarning, match="float32_matmul_precision.*every layer on an exact slower path"):
            kernels = _same_as_reference(net, x[:20])
    finally:
        torch.set_float32_matmul_precision(before)
    assert set(kernels.values()) == {"float64"}
    assert set(_same_as_reference(net, x[:20]).values()) == {"float32"}
