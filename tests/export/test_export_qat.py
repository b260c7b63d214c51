"""Quantization-aware fine-tuning: ``tdbn.export.qat.FakeQuantNet`` and ``tdbn finetune``.

The fake-quantized forward pass computes the integer network in integer units (exact in float32 under
``quant_fast``'s bound), so it is compared with the int64 simulation spike for spike: integers have no float ties to
avoid. At K = 16 it is compared with the float network exactly on a network that 16 bits represent without rounding,
and by its rounding error on the trained one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import tdbn
from tdbn.cli import main
from tdbn.export.qat import FakeQuantNet, _dense
from tdbn.export.quant import quantize
from tdbn.export.quant_eval import input_scale_of
from tdbn.train.restore import restore


def _fake_quant(run_dir: Path, *, bits: int, per_channel: bool = False, input_bits: int = 8,
                ) -> tuple[FakeQuantNet, nn.Module]:
    run = restore(run_dir)
    fused = tdbn.fuse(run.model)
    return FakeQuantNet(fused, bits=bits, input_shape=run.input_shape, per_channel=per_channel,
                        input_scale=input_scale_of(run, input_bits=input_bits), input_bits=input_bits), fused


@pytest.mark.parametrize("bits,per_channel", [(8, False), (4, False), (4, True)])
def test_fake_quant_forward_is_the_integer_network(trained_run: Path, test_digits, bits: int, per_channel: bool):
    """Every node's output (spikes at 18 LIF layers, currents, the decoder's integers) equals the int64 simulation
    of ``quantize`` of the same weights; the scores equal ``IntegerNet.scores`` up to the float32 scale product."""
    x, _ = test_digits
    fq, fused = _fake_quant(trained_run, bits=bits, per_channel=per_channel)
    ref = quantize(fused, bits=bits, input_shape=(1, 8, 8), input_scale=fq.net.input_scale, per_channel=per_channel)
    with torch.no_grad():
        nodes = fq.forward_nodes(x)
        scores = fq(x)
    assert set(fq.last_kernels.values()) == {torch.float32}  # every bound below 2^24: exact in float32
    expected = ref.forward_nodes(x)
    assert set(nodes) == set(expected) and sum(n.kind == "lif" for n in ref.nodes.values()) == 18
    for name, value in expected.items():
        assert torch.equal(nodes[name].to(torch.int64), value), name
    for name, node in ref.nodes.items():  # the integers it trains are quantize's, bit for bit
        if node.weight is not None:
            assert torch.equal(fq.net.nodes[name].weight, node.weight) and torch.equal(fq.net.nodes[name].bias,
                                                                                         node.bias), name
        if node.kind == "lif":
            assert torch.equal(fq.net.nodes[name].theta, node.theta), name
    torch.testing.assert_close(scores.double(), ref(x), rtol=1e-6, atol=1e-6)
    assert torch.equal(scores.argmax(1), ref(x).argmax(1))


def test_layers_beyond_float32_run_in_float64(trained_run: Path, test_digits):
    """16-bit weights on a 16-bit input: the encoding layer's sums pass 2^24 (float64 there, and in the LIFs whose
    membranes need it), the rest stays on float32; every node still equals the int64 simulation."""
    x, _ = test_digits
    fq, fused = _fake_quant(trained_run, bits=16, input_bits=16)
    ref = quantize(fused, bits=16, input_shape=(1, 8, 8), input_scale=fq.net.input_scale, input_bits=16)
    with torch.no_grad():
        nodes = fq.forward_nodes(x)
    assert fq.last_kernels["encoder.conv"] == torch.float64 and torch.float32 in fq.last_kernels.values()
    for name, value in ref.forward_nodes(x).items():
        assert torch.equal(nodes[name].to(torch.int64), value), name


def test_gradient_reaches_every_parameter(trained_run: Path, test_digits):
    x, y = test_digits
    fq, fused = _fake_quant(trained_run, bits=4)
    nn.functional.cross_entropy(fq(x[:32]), y[:32]).backward()
    for name, p in fused.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@torch.no_grad()
def _on_the_16_bit_grid(fused: nn.Module, fq: FakeQuantNet, grid: float) -> None:
    """Put every synaptic layer's real weights (per unit of its integer input) and biases on multiples of ``grid``,
    within +-(2^15 - 2) grid steps, and one weight of each LIF's sources (and of the decoder) at 2^15 - 1 steps:
    then every scale of 16-bit quantization is ``grid`` itself (Theta = v_th / grid), so nothing rounds."""
    qmax = 2 ** 15 - 1
    fed = {s: name for name, node in fq.net.nodes.items() if node.kind == "lif" for s in node.sources}
    first: set[str] = set()
    for name, layer in fq._layers.items():
        node = fq.net.nodes[name]
        unit = node.fold * node.unit  # powers of two here: exact
        w = torch.clamp(torch.round(layer.weight * unit / grid), -(qmax - 1), qmax - 1)
        group = fed.get(name, name)
        if group not in first:  # the largest weight of its group
            first.add(group)
            w.view(-1)[0] = qmax
        layer.weight.copy_(w * grid / unit)
        layer.bias.copy_(torch.round(layer.bias / grid) * grid)


def test_sixteen_bits_is_the_float_network(trained_run: Path, test_digits):
    """K = 16 changes nothing that 16 bits can hold: on the trained network put on the 16-bit grid, quantization is
    the identity (W_int s = W exactly) and the fake-quantized forward pass gives exactly the float network's
    spikes and scores (every value on a dyadic grid: float32 sums exact, so no ties to break either way)."""
    grid, input_step = 2.0 ** -12, 2.0 ** -6
    fused = tdbn.fuse(restore(trained_run).model)
    fq = FakeQuantNet(fused, bits=16, input_shape=(1, 8, 8), input_scale=input_step, input_bits=16)
    _on_the_16_bit_grid(fused, fq, grid)
    x = torch.clamp(torch.round(test_digits[0] / 4 / input_step), -32, 32) * input_step  # |x| <= 1/2, on 2^-6
    with torch.no_grad():
        q = fq.integers()
        for name, layer in fq._layers.items():
            node = fq.net.nodes[name]
            w_int, b_int, scale = q[name]
            assert float(scale) == grid, name
            real = _dense(layer).double() * node.fold * node.unit
            assert torch.equal(w_int * grid, real) and torch.equal(b_int * grid, layer.bias.double()), name
        spikes_fq = fq.forward_nodes(x)
        scores_fq = fq(x)
        spikes = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: spikes.__setitem__(n, o))
                 for n, m in fused.named_modules() if isinstance(m, tdbn.LIF)]
        scores = fused(x)
        for h in hooks:
            h.remove()
    assert len(spikes) == 18 and any(bool(s.any()) for s in spikes.values())
    for name, s in spikes.items():
        assert torch.equal(spikes_fq[name], s), name
    assert torch.equal(scores_fq, scores)


def test_sixteen_bits_on_the_trained_network(trained_run: Path, all_test_digits):
    """On the trained network as it is, 16-bit weights are within half a step (a step is at most 2^-14 of the
    largest weight sharing the scale; the clamp of the largest weights adds ``max|W| / (2 v_th)`` steps at most) of
    the float ones, and the fake-quantized network decides as the float network on nearly
    every test digit (only spikes whose potential lies within that error of the threshold can differ)."""
    x, _ = all_test_digits
    fq, fused = _fake_quant(trained_run, bits=16, input_bits=16)
    with torch.no_grad():
        q = fq.integers()
        real = {name: _dense(layer).double() * fq.net.nodes[name].fold * fq.net.nodes[name].unit
                for name, layer in fq._layers.items()}
        group = {s: node.sources for node in fq.net.nodes.values() if node.kind == "lif" for s in node.sources}
        for name, w in real.items():
            w_int, _, scale = q[name]
            s = float(scale)  # per layer: one scale for the sources of a LIF
            wmax = max(float(real[k].abs().max()) for k in group.get(name, [name]))
            # rounding: half a step; the clamp of the largest weights (Theta rounded up): 1/2 wmax / v_th steps
            assert float((w_int * s - w).abs().max()) <= 0.5 * s * max(1.0, wmax / 0.5) * (1 + 1e-9), name
            assert s <= 2.0 ** -14 * wmax, name
        same = (fq(x).argmax(1) == fused(x).argmax(1)).float().mean().item()
    assert same >= 0.97  # measured 359 / 360


def test_finetune_trains_the_deployed_integer_network(trained_run: Path, test_digits, tmp_path: Path, capsys):
    """``tdbn finetune`` at 4 bits (per layer: 58 % before on the test digits, 86 % after 2 epochs, measured) raises
    the integer network's accuracy; ``tdbn eval --bits 4`` and ``tdbn export --bits 4`` of the new run give that
    network, and the source run is untouched."""
    source = sorted(p.name for p in trained_run.iterdir())
    digest = (trained_run / "checkpoint.pt").read_bytes()
    out = tmp_path / "int4"
    assert main(["finetune", str(trained_run), "--bits", "4", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "before fine-tuning: 4-bit integer top-1" in text and "run folder:" in text
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    before, after = records[0]["test_top1"], records[-1]["test_top1"]
    assert records[-1]["epoch"] == 2 and after >= before + 0.1, (before, after)
    assert sorted(p.name for p in trained_run.iterdir()) == source
    assert (trained_run / "checkpoint.pt").read_bytes() == digest

    assert main(["eval", str(out), "--bits", "4", "--quiet"]) == 0  # the trained integer network, its accuracy
    assert json.loads((out / "eval-int4.json").read_text())["top1_integer"] == after
    assert main(["export", str(out), str(tmp_path / "int4.nir"), "--format", "nir", "--bits", "4"]) == 0
    assert "18/18 LIF layers with bit-identical spikes" in capsys.readouterr().out

    model = tdbn.load(out)  # the fused network itself
    assert tdbn.fusion.count_norm_layers(model) == 0
    x, _ = test_digits
    fq = FakeQuantNet(model, bits=4, input_shape=(1, 8, 8), input_scale=input_scale_of(restore(out), input_bits=8))
    deployed = quantize(model, bits=4, input_shape=(1, 8, 8), input_scale=fq.net.input_scale)
    with torch.no_grad():
        nodes = fq.forward_nodes(x)
    for name, value in deployed.forward_nodes(x).items():
        assert torch.equal(nodes[name].to(torch.int64), value), name

    with pytest.warns(UserWarning, match="was fine-tuned for 4-bit integers"):  # other settings: said
        assert main(["eval", str(out), "--bits", "8", "--quiet", "--limit", "20"]) == 0
    assert main(["train", "--resume", str(out)]) == 2
    assert "tdbn finetune" in capsys.readouterr().err


def test_finetune_refuses_bad_input(trained_run: Path, tmp_path: Path, capsys):
    out = str(tmp_path / "new")
    cases = [
        (["finetune", str(tmp_path / "nothing"), "--bits", "4", "--out", out], "checkpoint not found"),
        (["finetune", str(trained_run), "--bits", "1", "--out", out], "--bits must be 2..16"),
        (["finetune", str(trained_run), "--bits", "17", "--out", out], "--bits must be 2..16"),
        (["finetune", str(trained_run), "--bits", "4", "--input-bits", "0", "--out", out], "--input-bits must be"),
        (["finetune", str(trained_run), "--bits", "4", "--epochs", "0", "--out", out], "--epochs must be >= 1"),
        (["finetune", str(trained_run), "--bits", "4", "--lr", "-1", "--out", out], "--lr must be a positive"),
        (["finetune", str(trained_run), "--bits", "4", "--out", str(trained_run)], "not an empty folder"),
        (["finetune", str(trained_run), "--bits", "4", "--out", str(tmp_path / "no" / "new")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tdbn finetune: error:") and message in err, (argv, err)
    assert not (tmp_path / "new").exists()
    runs = tmp_path / "runs"  # a decay that is no exact shift has no integer network to fine-tune
    assert main(["train", "model.tau=0.3", "model.width=0.0625", "optim.epochs=1", "data.train_limit=32",
                 "data.test_limit=16", f"out_dir={runs}", "progress=false"]) == 0
    capsys.readouterr()
    (tau_run,) = runs.iterdir()
    assert main(["finetune", str(tau_run), "--bits", "4", "--out", out]) == 2
    assert "tau=0.3 is not m / 2^q" in capsys.readouterr().err and not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="eval mode"):
        FakeQuantNet(tdbn.fuse(restore(trained_run).model).train(), bits=4, input_shape=(1, 8, 8), input_scale=0.1)
