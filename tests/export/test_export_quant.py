"""Integer deployment: K-bit integer weights, integer thresholds, the decay as an exact shift; the int64
simulation and the same network written to NIR give bit-identical spikes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TimeDistributed
from tdbn.cli import main
from tdbn.export import from_nir
from tdbn.export.nir import write_graph
from tdbn.export.quant import dyadic, image_input_scale, max_membrane_bits, quantize
from consumers import run


def _integer(trained_run: Path, bits: int, *, input_bits: int = 8, per_channel: bool = False):
    opts = tdbn.saved_config(trained_run).data.options
    model = tdbn.load(trained_run)
    scale = image_input_scale(opts["mean"], opts["std"], input_bits=input_bits)
    return model, quantize(model, bits=bits, input_shape=(1, 8, 8), input_scale=scale, input_bits=input_bits,
                           per_channel=per_channel)


def test_lif_by_hand():
    fc = nn.Linear(1, 1)
    with torch.no_grad():
        fc.weight.fill_(0.4)
        fc.bias.zero_()
    net = nn.Sequential(TimeDistributed(fc), LIF(tau=0.25, v_th=0.5)).eval()
    q = quantize(net, bits=8, input_shape=(1,), input_scale=1.0)
    # Theta = round(127 * 0.5 / 0.4) = round(158.75) = 159, s = 0.5 / 159, W = round(0.4 / s) = round(127.2) = 127
    assert q.nodes["1"].theta.item() == 159 and q.nodes["0"].weight.item() == 127
    x = torch.ones(3, 1, 1)  # [T, N, 1]: 1, 1, 1
    # U = 127, 127/4 + 127 = 158.75 (not > 159), 158.75/4 + 127 = 166.69 > 159: spike at the third step only
    spikes = q.forward_nodes(x)["1"]
    assert spikes.dtype == torch.int64 and spikes.flatten().tolist() == [0, 0, 1]
    with torch.no_grad():
        assert net(x).flatten().tolist() == [0.0, 0.0, 1.0]  # float: 0.4, 0.5 (not > 0.5), 0.525


def test_nir_threshold_makes_ge_and_gt_agree():
    """A membrane that lands exactly on Theta: ``>`` does not fire, ``>=`` would; the written threshold lies half a
    membrane quantum above Theta, where no membrane can be, so both comparisons give the integer network's spike."""
    from fractions import Fraction

    fc = nn.Linear(1, 1)
    with torch.no_grad():
        fc.weight.fill_(0.5)
        fc.bias.zero_()
    q = quantize(nn.Sequential(TimeDistributed(fc), LIF(tau=0.25, v_th=0.5)).eval(), bits=8, input_shape=(1,),
                 input_scale=1.0)
    assert q.nodes["1"].theta.item() == 127 and q.nodes["0"].weight.item() == 127  # Theta = W = 127
    x = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # [T, N, 1]
    assert q.forward_nodes(x)["1"].flatten().tolist() == [0, 0, 1]  # U = 127 (= Theta), 31.75, 134.94
    with pytest.raises(ValueError, match="pass timesteps=T"):
        q.to_nir()  # the offset depends on the steps run; this network records none
    for portable, gain in ((True, Fraction(3, 4)), (False, Fraction(1))):
        graph = q.to_nir(timesteps=3, portable=portable)
        threshold = np.unique(graph.nodes["1"].v_threshold)
        F = 2 * (3 - 1)  # fraction bits of the membrane over 3 steps of tau = 1/4
        assert threshold.tolist() == [float(gain * (127 + Fraction(1, 2 ** (F + 1))))]
        assert graph.metadata["timesteps"] == 3
        U, levels = Fraction(0), []
        for current in (127, 0, 127):  # the consumer's membrane: gain U, exactly
            U = U / 4 + current
            v = gain * U
            assert (v > Fraction(threshold[0])) == (v >= Fraction(threshold[0])) == (U > 127)
            levels.append(U)
            U = 0 if U > 127 else U
        assert levels[0] == 127  # on Theta: at v_threshold = gain Theta, a consumer firing at >= would spike here


def test_decay_must_be_an_exact_shift():
    assert dyadic(0.25) == (1, 2) and dyadic(0.5) == (1, 1) and dyadic(0.0) == (0, 0) and dyadic(0.75) == (3, 2)
    with pytest.raises(ValueError, match=r"tau=0.3 is not m / 2\^q.*dyadic tau"):
        dyadic(0.3)
    net = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16, tau=0.3).eval()
    with pytest.raises(ValueError, match="tau=0.3"):
        quantize(net, bits=8, input_shape=(3, 8, 8), input_scale=0.02)


def test_integer_tensors_and_weight_range(trained_run: Path, test_digits):
    x, _ = test_digits
    for bits in (8, 4):
        _, q = _integer(trained_run, bits)
        qmax = 2 ** (bits - 1) - 1
        for name, node in q.nodes.items():
            if node.weight is not None:
                assert node.weight.dtype == torch.int64 and node.bias.dtype == torch.int64
                assert int(node.weight.abs().max()) <= qmax, name
            if node.kind == "lif":
                assert node.theta.dtype == torch.int64 and node.theta.dim() == 0 and node.theta >= 1
        nodes = q.forward_nodes(x[:8])
        assert all(v.dtype == torch.int64 for v in nodes.values())


def test_integer_network_follows_the_float_one(trained_run: Path, all_test_digits):
    """On a well-trained network (``all_test_digits`` checks it), the integer networks keep its decisions. Asserted
    where they are decisions: an input whose two best float scores nearly tie may flip under any change of
    summation order (another CPU, another thread count), so agreement is measured on the half of the 360 test
    digits with the larger float margin, and overall as the integer network's accuracy against the float one's."""
    x, y = all_test_digits
    model, q16 = _integer(trained_run, 16, input_bits=16)
    with torch.no_grad():
        scores = model(x)
    ref = scores.argmax(1)
    top2 = scores.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > (top2[:, 0] - top2[:, 1]).median()
    float_top1 = (ref == y).float().mean().item()
    with pytest.warns(UserWarning, match="off float32"):  # 16-bit input x 16-bit weights: beyond float32
        assert (q16(x).argmax(1) == ref).float().mean() >= 0.97  # fine weights and input: nearly the float network
    _, pc = _integer(trained_run, 8, per_channel=True)
    assert any(n.theta.dim() == 1 and n.theta.unique().numel() > 1 for n in pc.nodes.values() if n.kind == "lif")
    pred = pc(x).argmax(1)
    assert (pred[clear] == ref[clear]).float().mean() >= 0.9  # measured: 0.99
    assert (pred == y).float().mean().item() >= float_top1 - 0.05  # measured: within 1 point


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("portable", [True, False])
def test_integer_simulation_equals_integer_nir(trained_run: Path, test_digits, tmp_path: Path, bits: int,
                                               portable: bool):
    x, _ = test_digits
    _, q = _integer(trained_run, bits)
    assert max_membrane_bits(q, x) <= 24  # float32 consumers compute these membranes exactly
    path = tmp_path / "int.nir"
    write_graph(q.to_nir(portable=portable), path)
    ints = q.forward_nodes(x)
    xi = q.quantize_input(x).float()
    weights = [np.asarray(n.weight) for n in from_nir_nodes(path)]
    assert weights and all(np.array_equal(w, np.round(w)) for w in weights)  # integer-valued weights in the file
    with torch.no_grad():
        back = from_nir(path).forward_nodes(xi)
    lifs = [n for n, node in q.nodes.items() if node.kind == "lif"]
    assert len(lifs) == 18
    for name in lifs:
        assert torch.equal(back[name], ints[name].float()), name
    assert torch.equal(back["output"], ints["output"].float())
    if portable:  # a third party: snnTorch, in float32, on the file
        frames = xi.unsqueeze(0).expand(q.timesteps, *xi.shape).contiguous()
        out, spikes = run("snntorch", path, frames)
        for name in lifs:
            assert torch.equal(spikes[name].reshape(ints[name].shape), ints[name].float()), name
        assert torch.equal(out.reshape(ints["output"].shape), ints["output"].float())


def from_nir_nodes(path: Path) -> list:
    import nir

    return [n for n in nir.read(str(path)).nodes.values() if isinstance(n, (nir.Conv2d, nir.Affine))]


def test_cli_export_and_eval_bits(trained_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "int8.nir"
    assert main(["export", str(trained_run), str(out), "--format", "nir", "--bits", "8"]) == 0
    assert "18/18 LIF layers with bit-identical spikes" in capsys.readouterr().out
    report = tmp_path / "int8.json"
    assert main(["eval", str(trained_run), "--bits", "8", "--limit", "40", "--out", str(report)]) == 0
    text = capsys.readouterr().out
    assert "8-bit integer top-1" in text and "(40 test samples" in text
    assert report.is_file()
    assert main(["export", str(trained_run), str(tmp_path / "m.onnx"), "--format", "onnx", "--bits", "8"]) == 2
    assert "--bits applies to --format nir only" in capsys.readouterr().err
    assert main(["eval", str(trained_run), "--bits", "8", "--fuse"]) == 2
    assert "drop --fuse" in capsys.readouterr().err
