"""Operation counts: exact on hand-computable nets, Table 6's ANN MACs within 5%."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from tdbn.analysis import ann_macs, count_ops, energy_pj, snn_ops, synaptic_events
from tdbn.layers import LIF, TimeDistributed
from tdbn.models import create


def _two_layer() -> nn.Sequential:
    fc1 = nn.Linear(3, 2, bias=False)
    fc2 = nn.Linear(2, 4)
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # hidden neuron k copies input k
    return nn.Sequential(TimeDistributed(fc1), LIF(tau=0.0, v_th=0.5), TimeDistributed(fc2))


def test_two_layer_net_counts_exactly():
    net = _two_layer()
    x = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]])  # [T=2, N=1, 3]: 4 input spikes
    ops = count_ops(net, x, images=1, timesteps=2)
    first, second = ops.layers
    # layer 1: 4 spikes x fan-out 2; hidden spikes are [1, 0] then [0, 1]: 2 spikes x fan-out 4
    assert (first.additions, second.additions) == (8, 8)
    assert ops.additions == 16 and ops.multiplications == 0
    assert first.spike_input and second.spike_input
    assert (first.ann_macs, second.ann_macs) == (2 * 2 * 3, 2 * 4 * 2)  # outputs x fan-in, both steps


def test_two_layer_net_encoding_and_decoding_are_multiplications():
    net = _two_layer()
    x = torch.tensor([[[0.3, -2.0, 1.5]], [[0.0, 0.0, 0.7]]])  # real-valued input
    ops = count_ops(net, x, images=1, encoding=net[0].module, decoding=net[2].module, encoding_repeats=3)
    assert ops.additions == 0
    assert ops.multiplications == 3 * (2 * 2 * 3) + 2 * 4 * 2  # encoding x repeats + decoding, dense
    assert [layer.role for layer in ops.layers] == ["encoding", "decoding"]


def test_real_valued_hidden_input_counts_event_driven_multiplications():
    net = _two_layer()
    x = torch.tensor([[[0.5, 0.0, 0.25]]])  # [T=1, N=1, 3]: 2 non-zero, not binary
    ops = count_ops(net, x, images=1)
    assert ops.layers[0].multiplications == 2 * 2 and not ops.layers[0].spike_input


def _brute_conv_events(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Count (active input, output) synapse pairs by walking every output position and kernel tap."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cin_g, cout_g = C // conv.groups, conv.out_channels // conv.groups
    total = 0
    for n, co, i, j, a, b in itertools.product(range(N), range(conv.out_channels), range(Ho), range(Wo),
                                               range(kh), range(kw)):
        r, c = i * sh - ph + a * dh, j * sw - pw + b * dw
        if 0 <= r < H and 0 <= c < W:
            g = co // cout_g
            total += int((x[n, g * cin_g : (g + 1) * cin_g, r, c] != 0).sum())
    return total


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=2, padding=1),
     dict(kernel_size=1, stride=2, padding=0), dict(kernel_size=3, stride=1, padding=2, dilation=2, groups=2)],
)
def test_conv_fanout_is_exact_at_borders_strides_and_groups(kwargs):
    conv = nn.Conv2d(4, 6, **kwargs)
    x = (torch.rand(2, 4, 5, 6) < 0.4).float()
    assert synaptic_events(conv, x) == _brute_conv_events(conv, x)


def test_conv_fanout_by_hand():
    conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)  # 4x4 -> 2x2
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 1  # reached only by output (0, 0): fan-out 1 position x 2 channels
    centre = torch.zeros(1, 1, 4, 4)
    centre[0, 0, 1, 1] = 1  # in all four receptive fields: 4 x 2
    assert synaptic_events(conv, corner) == 2
    assert synaptic_events(conv, centre) == 8


def test_snn_ops_of_a_spiking_net_match_brute_force():
    net = create("plain", num_classes=3, depth=5, width=0.0625, timesteps=2)  # convs 4, 4, 8, 16 channels
    x = torch.randn(2, 3, 8, 8)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0]))
             for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    ops = snn_ops(net, x)
    hidden = [layer for layer in ops.layers if layer.role == "hidden"]
    assert len(hidden) == 3 and all(layer.spike_input for layer in hidden)
    convs = dict(net.named_modules())
    brute = sum(_brute_conv_events(convs[n], inputs[n]) for n in inputs if not n.startswith("encoder"))
    assert ops.additions * ops.images == brute > 0
    enc = 4 * 8 * 8 * 27  # encoding conv, one image, one step
    assert ops.multiplications == 2 * enc + 2 * 16 * 3  # T = 2 steps of encoding and decoding


@pytest.mark.parametrize("name,size,paper", [("resnet19", 32, 2.2e9), ("resnet34_large", 224, 1.4e10)])
def test_ann_macs_reproduce_table6_within_5_percent(name, size, paper):
    with torch.device("meta"):  # shapes only
        net = create(name, num_classes=10 if name == "resnet19" else 1000)
        macs = ann_macs(net, torch.zeros(1, 1, 3, size, size))
    assert abs(macs / paper - 1) < 0.05, macs


def test_ann_macs_by_hand_and_energy():
    net = _two_layer()
    assert ann_macs(net, torch.zeros(1, 1, 3)) == 2 * 3 + 4 * 2
    assert energy_pj(additions=1000, multiplications=10) == pytest.approx(1000 * 0.9 + 10 * 4.6)
    ops = count_ops(net, torch.tensor([[[1.0, 1.0, 0.0]]]), images=1)
    assert ops.energy_pj() == pytest.approx((2 * 2 + 2 * 4) * 0.9)


# ---- NeuroBench's convention: what is computed ------------------------------------------------------------------


def test_neurobench_convention_by_hand():
    from tdbn.analysis.ops import neurobench_ops

    net = _two_layer()
    x = torch.tensor([[[1.0, 2.0, 0.0]], [[0.0, 0.7, 0.4]]])  # [T=2, N=1, 3], real-valued: MACs in layer 1
    nb = neurobench_ops(net, x, images=1)
    # layer 1: step 0 inputs 0 and 1 each meet one non-zero weight (2), step 1 input 1 does (1); input 2 meets only
    # zero weights. Hidden spikes (tau = 0, v_th = 0.5): [1, 1] then [0, 1]: 3 spikes x 4 non-zero weights = 12 ACs
    assert nb.layers == {"0": (0, 3), "2": (12, 0)}
    assert (nb.macs, nb.acs) == (3, 12)
    assert nb.activation_sparsity == 0.25  # 3 of 4 LIF outputs are spikes
    paper = count_ops(net, x, images=1)  # the paper's convention: non-zero inputs x fan-out, zero weights included
    assert paper.layers[0].multiplications == 4 * 2


def test_neurobench_convention_skips_padding_taps_and_counts_the_static_encoder_once():
    from tdbn.analysis.ops import dense_macs, effective_ops, neurobench_ops

    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.ones(1, 2, 4, 4)
    # valid taps of a 3x3 window on a 4x4 map padded by 1: 4 corners x 4 + 8 edges x 6 + 4 inner x 9 = 100 (not 144)
    assert effective_ops(conv, x) == 100 * 2 * 3
    assert dense_macs(conv, conv(x)) == 144 * 2 * 3
    net = create("plain", num_classes=3, depth=5, width=0.0625, timesteps=3).eval()
    img = torch.randn(2, 3, 8, 8)
    nb = neurobench_ops(net, img)
    enc = net.encoder.conv.module
    assert nb.layers["encoder.conv"] == (0, effective_ops(enc, img))  # once, not T = 3 times
    paper = snn_ops(net, img)
    assert paper.layers[0].multiplications == 3 * dense_macs(enc, enc(img))
    assert nb.layers["body.stage1.0.conv"][0] > 0 == nb.layers["body.stage1.0.conv"][1]  # spikes in: additions


def _layer_calls(net: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.append((n, m, i[0].clone())))
             for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return calls


def test_neurobench_counts_equal_neurobench(tmp_path):
    # NeuroBench is not a tdbn test dependency (it pins its own snnTorch); TDBN_NEUROBENCH_PYTHON names a Python that
    # has it (bench/consumer_envs.sh). Its per-layer counter runs on every call of every layer of a fused ResNet.
    import os
    import subprocess
    from pathlib import Path

    import tdbn
    from tdbn.analysis.ops import neurobench_ops

    from side_envs import need_side_python

    python = need_side_python("neurobench", "TDBN_NEUROBENCH_PYTHON")
    net = tdbn.fuse(create("resnet19", num_classes=10, width=1 / 16, timesteps=2, input_size=8).eval())
    x = torch.randn(3, 3, 8, 8)
    calls = _layer_calls(net, x)
    torch.save([(n, m, i) for n, m, i in calls], tmp_path / "calls.pt")
    script = Path(__file__).with_name("neurobench_check.py")
    env = os.environ | {"PYTHONPATH": str(Path(tdbn.__file__).parents[1])}
    subprocess.run([python, str(script), str(tmp_path / "calls.pt"), str(tmp_path / "counts.pt")], check=True,
                   capture_output=True, timeout=300, env=env)
    theirs = torch.load(tmp_path / "counts.pt")  # [(name, macs, spiking)] per call
    ours = neurobench_ops(net, x)
    acs = sum(m for _, m, spiking in theirs if spiking)
    macs = sum(m for _, m, spiking in theirs if not spiking)
    assert (ours.acs * 3, ours.macs * 3) == (acs, macs) and acs > 0 and macs > 0
