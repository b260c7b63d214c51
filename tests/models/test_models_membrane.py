"""Membrane residuals (``residual="membrane"``): the block against a plain transcription of its formula (forward
and every gradient in float64), fusion, streaming, NIR (exact round trip, the stream's fan-out), the config key and
clear refusals (the integer network: tests/export/test_export_quant_fast.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tdbn
from tdbn.export import from_nir, to_nir, write_nir
from tdbn.models import AnalogEncoder, MembraneBlock
from tdbn.stream import init_state, step

from formulas import RectangleSpike
from fusion_checks import assert_fused_equal, randomize_bn
from saved_tensors import SavedBytes
from tiny_models import tiny_model

F64 = torch.float64
EPS = 1e-5
TAU, V_TH = 0.25, 0.5


def lif_formula(x):
    """u_t = tau u_{t-1} (1 - o_{t-1}) + x_t, o_t = H(u_t - v_th) (Eq. 1-3), over x [T, ...]."""
    u, o, out = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        u = TAU * u * (1 - o) + x[t]
        o = RectangleSpike.apply(u - V_TH)
        out.append(o)
    return torch.stack(out)


def conv_tdbn_formula(x, conv, bn, stride):
    """tdBN(conv(x)) with the batch statistics over time, batch and space (Eq. 5-8), x [T, N, C, H, W]."""
    t, n = x.shape[:2]
    z = F.conv2d(x.flatten(0, 1), conv.weight, stride=stride, padding=conv.padding)
    z = z.view(t, n, *z.shape[1:])
    mean, var = z.mean((0, 1, 3, 4)), z.var((0, 1, 3, 4), unbiased=False)
    c = (None, None, slice(None), None, None)
    return bn.alpha * V_TH * bn.weight[c] * (z - mean[c]) / torch.sqrt(var[c] + EPS) + bn.bias[c]


def block_formula(block: MembraneBlock, h):
    """h + tdBN(conv(LIF(tdBN(conv(LIF(h)))))), the identity adding h, a projection tdBN(conv1x1(LIF(h)))."""
    s = lif_formula(h)
    u1, u2 = block.residual.unit1, block.residual.unit2
    stride = u1.conv.module.stride
    r = conv_tdbn_formula(lif_formula(conv_tdbn_formula(s, u1.conv.module, u1.bn, stride)), u2.conv.module, u2.bn, 1)
    if len(block.shortcut):
        return r + conv_tdbn_formula(s, block.shortcut.conv.module, block.shortcut.bn, stride)
    return r + h


def _perturbed_block(in_ch: int, out_ch: int, stride: int) -> MembraneBlock:
    opts = tdbn.models.spiking_options(timesteps=3)
    block = MembraneBlock(opts, in_ch, out_ch, stride).to(F64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("bn.weight"):
                p.copy_(torch.rand(p.shape, generator=g, dtype=F64) + 0.6)
            elif name.endswith("bn.bias"):
                p.copy_(torch.rand(p.shape, generator=g, dtype=F64) * 0.4 - 0.2)
            else:
                p.mul_(3.0)  # conv weights large enough that the second LIF fires
    return block.train()


def _assert_same_gradients(block, got_pair, want_pair, **tol):
    """The gradients of the block input and every parameter, for one random output gradient, agree; returns them."""
    (out, h1), (ref, h2) = got_pair, want_pair
    g = torch.randn_like(out)
    params = list(block.parameters())
    got = torch.autograd.grad(out, [h1, *params], g)
    want = torch.autograd.grad(ref, [h2, *params], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    return got


@pytest.mark.parametrize("T", [3, 1])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(4, 4, 1), (4, 6, 2)])
def test_block_is_its_formula_forward_and_every_gradient(in_ch, out_ch, stride, T):
    block = _perturbed_block(in_ch, out_ch, stride)
    h = torch.randn(T, 4, in_ch, 8, 8, dtype=F64) * 0.8 + 0.3
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    out = block(h1)
    ref = block_formula(block, h2)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    spikes = lif_formula(h)
    assert 0 < spikes.mean() < 1  # a comparison between firing layers
    got = _assert_same_gradients(block, (out, h1), (ref, h2), rtol=1e-9, atol=1e-10)
    assert got[0].abs().sum() > 0 and all(p.abs().sum() > 0 for p in got[1:])


@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("in_ch, out_ch, stride", [(4, 4, 1), (4, 6, 2)])
def test_lean_block_stores_spike_bits_and_equals_its_modules(in_ch, out_ch, stride, T):
    """In training the block's convs store spike bits (one packing of the block input for the first conv and the
    projection) and, at T = 1, its LIF the bits of its surrogate window: the full-size float tensors stored are
    the conv outputs the tdBNs need (and ``u`` at T > 1). The same values and gradients as its modules run one
    after the other (``lean_training(False)``)."""
    block = _perturbed_block(in_ch, out_ch, stride)
    h = torch.randn(T, 4, in_ch, 8, 8, dtype=F64) * 0.8 + 0.3
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    with SavedBytes() as saved:
        out = block(h1)
    with tdbn.operators.lean_training(False), SavedBytes() as plain:
        ref = block(h2)
    weights = {p.data_ptr() for p in block.parameters()}
    big = lambda ts: sorted(t.numel() for t in ts  # noqa: E731 - the float activations stored
                            if t.is_floating_point() and t.numel() > 4 * 8 * 8 and t.data_ptr() not in weights)
    out_n = T * 4 * out_ch * (8 // stride) ** 2
    convs = [out_n, out_n] + ([out_n] if len(block.shortcut) else [])  # unit1's, unit2's (and the projection's)
    assert big(saved.saved) == sorted(convs + ([] if T == 1 else [h.numel()]))
    assert len(big(plain.saved)) > len(big(saved.saved))  # the modules store float spikes and u besides
    assert sum(t.numel() for t in saved.saved if t.dtype == torch.uint8) > 0
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # the units sum in their own order
    _assert_same_gradients(block, (out, h1), (ref, h2), rtol=1e-12, atol=1e-12)


def test_network_layout_and_the_paper_default():
    net = tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2, residual="membrane")
    assert isinstance(net.encoder, AnalogEncoder) and not hasattr(net.encoder, "lif")
    blocks = [m for m in net.body.modules() if isinstance(m, MembraneBlock)]
    assert len(blocks) == 8 and not any(isinstance(m, tdbn.models.BasicBlock) for m in net.modules())
    assert list(net.head._modules)[:2] == ["lif", "pool"]  # the stream fires before the pool
    paper = tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2)
    assert not any(isinstance(m, MembraneBlock) for m in paper.modules())  # spike residuals stay the default
    x = torch.randn(2, 3, 32, 32)
    net(x).square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", ["resnet17", "resnet19"])
def test_fused_equals_unfused(name):
    kw = dict(width=1 / 16, timesteps=2, residual="membrane")
    if name == "resnet17":
        net, make = tdbn.models.create(name, num_classes=11, **kw), lambda n=2: torch.randn(2, n, 2, 32, 32)
    else:
        net, make = tdbn.models.create(name, num_classes=10, **kw), lambda n=2: torch.randn(n, 3, 32, 32)
    randomize_bn(net, 2, lambda: make(4))
    assert_fused_equal(net, make(3))


def _tiny(timesteps: int = 4):
    return tiny_model("resnet19", in_channels=2, timesteps=timesteps, size=16, weight=(0.8, 1.8), bias=(-0.1, 0.3),
                      warm_input=lambda: torch.poisson(torch.full((timesteps, 2, 2, 16, 16), 0.4)),
                      residual="membrane")


@pytest.mark.parametrize("fused", [False, True])
def test_streams_like_its_multi_step_forward(fused):
    model = _tiny()
    model = tdbn.fuse(model) if fused else model
    x = torch.poisson(torch.full((4, 2, 2, 16, 16), 0.4))
    with torch.no_grad():
        ref = model.forward_steps(x)
        state = init_state(model, 2)
        for t in range(4):
            scores, state = step(model, x[t], state)
            assert torch.equal(scores, ref[: t + 1].mean(0))


def test_nir_round_trip_is_exact_and_the_stream_fans_out(tmp_path):
    model = _tiny()
    graph = write_nir(model, tmp_path / "m.nir", input_shape=(2, 16, 16), portable=False)
    fused = tdbn.fuse(model)
    x = (torch.rand(4, 3, 2, 16, 16) > 0.7).float()
    with torch.no_grad():
        assert torch.equal(from_nir(tmp_path / "m.nir")(x), fused(x))
    # stage 1 has identity shortcuts: the third block's LIF sums the encoder's and both earlier blocks' outputs
    into = sorted(src for src, dst in graph.edges if dst == "body.stage1.2.lif")
    assert into == ["body.stage1.0.residual.unit2.conv", "body.stage1.1.residual.unit2.conv", "encoder.conv"]
    # the portable form (r = 1, the LIF's input gain folded into its sources, each scaled once) fires the same
    # spikes but where float32 rounding of a folded gain moves a potential across the threshold; a source scaled
    # twice (by every LIF it feeds) would multiply the stream by 4/3 per extra reader and change most spikes
    portable = from_nir(to_nir(model, input_shape=(2, 16, 16)))
    lifs = {n: m for n, m in fused.named_modules() if isinstance(m, tdbn.LIF)}
    spikes = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: spikes.__setitem__(n, o)) for n, m in lifs.items()]
    with torch.no_grad():
        fused(x)
        nodes = portable.forward_nodes(x)
    for h in hooks:
        h.remove()
    equal = sum(int((nodes[n] == v).sum()) for n, v in spikes.items())
    assert len(spikes) == 18 and equal >= 0.999 * sum(v.numel() for v in spikes.values())


def test_config_key_and_refusals():
    cfg = tdbn.train.config_from_dict({"model": {"name": "resnet19", "options": {"residual": "membrane"}}})
    assert cfg.model.options == {"residual": "membrane"}
    with pytest.raises(ValueError, match="unknown residual 'membranes'.*valid: \\['spike', 'membrane'\\]"):
        tdbn.models.create("resnet19", num_classes=10, width=1 / 16, residual="membranes")
    with pytest.raises(ValueError, match="unknown option.*residual"):
        tdbn.models.create("resnet34", num_classes=10, width=1 / 16, residual="membrane")


def test_membrane_residuals_are_refused_where_the_net_is_not_built_for_them():
    from tdbn.models.resnet import _create_resnet

    for name, has in [("resnet34", "a global pool"), ("resnet50", "bottlenecks")]:
        with pytest.raises(ValueError, match=f"built for resnet17 and resnet19.*{name} has {has}"):
            _create_resnet(name, num_classes=3, in_channels=3, width=1 / 16, timesteps=1, residual="membrane")
