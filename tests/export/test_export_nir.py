"""NIR export of every registered model: graph structure, exact round trip, and clear errors on bad input."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TimeDistributed
from tdbn.export import NIRExportError, from_nir, to_nir, write_nir
from tdbn.layers import Flatten
from tiny_models import tiny_model

SIZE = 16


def _model(name: str, *, in_channels: int = 2, timesteps: int = 3) -> nn.Module:
    # non-trivial tdBN parameters and running statistics, so that fusion changes every weight
    return tiny_model(name, in_channels=in_channels, timesteps=timesteps, size=SIZE, weight=(0.6, 1.6),
                      bias=(-0.2, 0.2), warm_input=lambda: torch.rand(8, in_channels, SIZE, SIZE))


def _spikes_by_path(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    spikes: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=name: spikes.__setitem__(n, o))
        for name, m in model.named_modules()
        if isinstance(m, LIF)
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return spikes, out


@pytest.mark.parametrize("name", tdbn.models.names())
def test_every_model_round_trips_exactly(name: str, tmp_path: Path):
    model = _model(name)
    path = tmp_path / f"{name}.nir"
    graph = write_nir(model, path, input_shape=(2, SIZE, SIZE), portable=False)  # the literal form: bit-exact
    net = from_nir(path)
    fused = tdbn.fuse(model)
    for x in (torch.rand(4, 2, SIZE, SIZE), (torch.rand(3, 4, 2, SIZE, SIZE) > 0.8).float()):  # static, events
        ours, out = _spikes_by_path(fused, x)
        with torch.no_grad():
            nodes = net.forward_nodes(x)
        assert set(ours) <= set(nodes)
        for layer, spikes in ours.items():
            assert torch.equal(nodes[layer], spikes), f"{name}: spikes differ at {layer}"
        assert torch.equal(nodes["output"].mean(0), out)
    # every node has its shapes, every LIF node of ours is a nir.LIF
    for node_name, node in graph.nodes.items():
        assert all(v is not None for v in node.input_type.values()), node_name
        assert all(v is not None for v in node.output_type.values()), node_name
    assert sum(isinstance(n, nir.LIF) for n in graph.nodes.values()) == len(ours)
    assert np.array_equal(graph.nodes["output"].output_type["output"], [5])


@pytest.mark.parametrize("name", tdbn.models.names())
def test_every_model_portable_form_runs_the_same(name: str):
    model = _model(name)
    graph = to_nir(model, input_shape=(2, SIZE, SIZE))
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert "AvgPool2d" not in types and types <= {"Input", "Output", "Conv2d", "Affine", "Linear", "Flatten", "LIF"}
    assert all(np.all(n.r == 1.0) for n in graph.nodes.values() if isinstance(n, nir.LIF))
    net, fused = from_nir(graph), tdbn.fuse(model)
    x = torch.rand(4, 2, SIZE, SIZE)
    ours, out = _spikes_by_path(fused, x)
    with torch.no_grad():
        nodes = net.forward_nodes(x)
    equal, total = sum(int((nodes[k] == v).sum()) for k, v in ours.items()), sum(v.numel() for v in ours.values())
    assert equal >= 0.999 * total, name  # float rounding of the folded factors may flip a spike at the threshold
    if equal == total:  # then only the rounding of the decoder's (pooling-scaled) weights remains
        assert torch.allclose(nodes["output"].mean(0), out, atol=1e-5), name


@pytest.mark.parametrize("name", ["resnet19", "resnet50"])
def test_residual_sums_are_two_edges_into_the_block_lif(name: str):
    model = _model(name)
    graph = to_nir(model, input_shape=(2, SIZE, SIZE))
    blocks = [n for n, m in model.named_modules() if isinstance(m, (tdbn.models.BasicBlock, tdbn.models.Bottleneck))]
    assert blocks
    for block in blocks:
        sources = sorted(src for src, dst in graph.edges if dst == f"{block}.lif")
        assert len(sources) == 2, (block, sources)
        assert sources[0].startswith(f"{block}.residual.") and sources[1].startswith(f"{block}.shortcut.")


def test_identity_shortcut_without_norm_is_an_edge_from_the_block_input():
    model = tdbn.models.create("resnet", num_classes=3, depth=8, width=1 / 16, shortcut_norm="projection").eval()
    graph = to_nir(model, input_shape=(3, SIZE, SIZE), portable=False)
    sources = sorted(src for src, dst in graph.edges if dst == "body.stage1.0.lif")
    assert sources == ["body.stage1.0.residual.unit2.conv", "encoder.lif"]
    # portable: the spikes cannot carry the LIF's input gain, so a diagonal 1x1 conv of weight 1 / (1 - tau) does
    graph = to_nir(model, input_shape=(3, SIZE, SIZE))
    gain = "body.stage1.0.lif.gain.encoder.lif"
    assert sorted(src for src, dst in graph.edges if dst == "body.stage1.0.lif") == [
        gain, "body.stage1.0.residual.unit2.conv"]
    assert [src for src, dst in graph.edges if dst == gain] == ["encoder.lif"]
    w = graph.nodes[gain].weight
    np.testing.assert_array_equal(w[:, :, 0, 0], np.eye(w.shape[0], dtype=np.float32) * np.float32(1 / 0.75))
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (from_nir(graph)(x).argmax(1) == tdbn.fuse(model)(x).argmax(1)).all()


def test_folded_weights_are_written(tmp_path: Path):
    model = _model("plain")
    fused = tdbn.fuse(model)
    graph = to_nir(model, input_shape=(2, SIZE, SIZE), portable=False)
    conv = graph.nodes["encoder.conv"]
    assert isinstance(conv, nir.Conv2d)
    np.testing.assert_array_equal(conv.weight, fused.encoder.conv.module.weight.detach().numpy())
    np.testing.assert_array_equal(conv.bias, fused.encoder.conv.module.bias.detach().numpy())
    assert not np.array_equal(conv.weight, model.encoder.conv.module.weight.detach().numpy())  # folded (Eq. 9)
    lif = graph.nodes["encoder.lif"]
    assert lif.tau.shape == tuple(conv.output_type["output"])
    np.testing.assert_allclose(lif.tau, 1e-4 / 0.75)
    np.testing.assert_allclose(lif.r, 1 / 0.75)
    assert graph.metadata["timesteps"] == 3 and graph.metadata["dt"] == 1e-4
    # portable: r = 1 and the gain 1 / (1 - tau) in the weights and biases, rounded once from float64
    portable = to_nir(model, input_shape=(2, SIZE, SIZE))
    gained = lambda t: (t.detach().double() / 0.75).float().numpy()  # noqa: E731
    np.testing.assert_array_equal(portable.nodes["encoder.conv"].weight, gained(fused.encoder.conv.module.weight))
    np.testing.assert_array_equal(portable.nodes["encoder.conv"].bias, gained(fused.encoder.conv.module.bias))
    np.testing.assert_array_equal(portable.nodes["encoder.lif"].r, 1.0)
    np.testing.assert_allclose(portable.nodes["encoder.lif"].tau, 1e-4 / 0.75)
    np.testing.assert_array_equal(portable.nodes["encoder.lif"].v_threshold, 0.5)
    assert portable.metadata["portable"] == 1 and graph.metadata["portable"] == 0


def test_portable_pooling_is_a_sum_conv_with_the_average_in_the_next_weights():
    model = _model("resnet19")
    fused = tdbn.fuse(model)
    graph = to_nir(model, input_shape=(2, SIZE, SIZE))
    pool = graph.nodes["head.pool"]
    assert isinstance(pool, nir.Conv2d) and set(np.unique(pool.weight)) == {0.0, 1.0}
    C = pool.weight.shape[0]
    np.testing.assert_array_equal(pool.weight.sum(axis=(2, 3)), 4 * np.eye(C))  # 2x2 window of each channel
    fc = fused.head.fc.fc.module  # fc after pool/2: weight x 1/4 (pooling) x 1/(1 - tau) (its LIF's gain)
    np.testing.assert_array_equal(graph.nodes["head.fc.fc"].weight,
                                  (fc.weight.detach().double() / 4 / 0.75).float().numpy())
    np.testing.assert_array_equal(graph.nodes["head.fc.fc"].bias, (fc.bias.detach().double() / 0.75).float().numpy())
    dec = fused.decoder.module  # feeds the output, not a LIF: unchanged
    np.testing.assert_array_equal(graph.nodes["decoder"].weight, dec.weight.detach().numpy())
    ours, out = _spikes_by_path(fused, x := torch.rand(6, 2, SIZE, SIZE))
    with torch.no_grad():
        nodes = from_nir(graph).forward_nodes(x)
    equal = sum(int((nodes[k] == v).sum()) for k, v in ours.items())
    assert equal >= 0.9999 * sum(v.numel() for v in ours.values())  # float rounding of the folded gain only
    assert torch.equal(nodes["output"].mean(0).argmax(1), out.argmax(1))


def test_lif_parameters_round_trip_for_other_decays(tmp_path: Path):
    for tau, v_th in [(0.0, 0.3), (0.5, 1.0), (0.3, 0.5)]:
        model = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16, tau=tau, v_th=v_th).eval()
        write_nir(model, tmp_path / "m.nir", input_shape=(3, 8, 8), dt=1e-3, portable=False)
        net = from_nir(tmp_path / "m.nir")
        lifs = [m for m in net.modules() if isinstance(m, LIF)]
        assert lifs and all(np.float32(m.tau) == np.float32(tau) and m.v_th == v_th for m in lifs)
        x = torch.rand(2, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(net(x), tdbn.fuse(model)(x))


# ---- bad input -------------------------------------------------------------------------------------------------


def test_training_mode_model_is_refused():
    model = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16)  # train mode, unfused
    with pytest.raises(NIRExportError, match=r"eval mode.*model\.eval\(\)"):
        to_nir(model, input_shape=(3, 8, 8))


def test_unsupported_layer_is_named():
    net = nn.Sequential(
        OrderedDict(
            conv=TimeDistributed(nn.Conv2d(1, 2, 3, padding=1)),
            lif=LIF(),
            pool=TimeDistributed(nn.MaxPool2d(2)),
            flat=Flatten(),
        )
    ).eval()
    with pytest.raises(NIRExportError, match=r"pool \(TimeDistributed\(MaxPool2d\)\).*supported"):
        to_nir(net, input_shape=(1, 8, 8))
    act = nn.Sequential(OrderedDict(conv=TimeDistributed(nn.Conv2d(1, 2, 3)), act=nn.ReLU())).eval()
    with pytest.raises(NIRExportError, match=r"act \(ReLU\)"):
        to_nir(act, input_shape=(1, 8, 8))


def test_container_with_its_own_forward_is_refused():
    class Doubling(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    net = nn.Sequential(OrderedDict(block=Doubling(TimeDistributed(nn.Conv2d(1, 2, 3))), lif=LIF())).eval()
    with pytest.raises(NIRExportError, match=r"block \(Doubling\)"):
        to_nir(net, input_shape=(1, 8, 8))


def test_uneven_adaptive_pool_is_refused():
    net = nn.Sequential(TimeDistributed(nn.AdaptiveAvgPool2d(2))).eval()  # 3x3 -> 2x2: overlapping windows
    with pytest.raises(NIRExportError, match=r"0: AdaptiveAvgPool2d\(output_size=2\) on a 3x3 input.*unequal"):
        to_nir(net, input_shape=(1, 3, 3))


def test_wrong_input_shape_is_refused():
    model = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16).eval()
    with pytest.raises(NIRExportError, match=r"1 input channels; the model takes 3"):
        to_nir(model, input_shape=(1, 8, 8))


def test_missing_and_unreadable_files_are_named(tmp_path: Path):
    missing = tmp_path / "nothing.nir"
    with pytest.raises(FileNotFoundError, match="nothing.nir"):
        from_nir(missing)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(ValueError, match=r"cannot read a NIR graph from .*garbage\.nir"):
        from_nir(garbage)


def test_node_without_tdbn_equivalent_is_named():
    shape = np.array([4])
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": shape}),
            "syn": nir.CubaLIF(
                tau_syn=np.full(4, 2e-3), tau_mem=np.full(4, 1e-2), r=np.ones(4), v_leak=np.zeros(4),
                v_threshold=np.ones(4),
            ),
            "output": nir.Output(output_type={"output": shape}),
        },
        edges=[("input", "syn"), ("syn", "output")],
        metadata={"dt": 1e-3},
    )
    with pytest.raises(ValueError, match=r"node 'syn' is a nir\.CubaLIF"):
        from_nir(graph)


def _lif_graph(**overrides) -> nir.NIRGraph:
    params = {"tau": np.full(3, 2e-3), "r": np.full(3, 2.0), "v_leak": np.zeros(3), "v_threshold": np.ones(3)}
    params.update(overrides)
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "lif": nir.LIF(**params),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "lif"), ("lif", "output")],
    )


def test_lif_nodes_that_are_not_ours_are_refused():
    net = from_nir(_lif_graph(), dt=1e-3)  # tau = 1 - 1e-3 / 2e-3 = 0.5, gain 1e-3 * 2 / 2e-3 = 1
    assert [(m.tau, m.v_th) for m in net.modules() if isinstance(m, LIF)] == [(0.5, 1.0)]
    with pytest.raises(ValueError, match="records no time step dt"):
        from_nir(_lif_graph())
    # another input gain (the portable form: r = 1) is our LIF with the threshold divided by the gain
    scaled = from_nir(_lif_graph(r=np.full(3, 5.0)), dt=1e-3)  # gain 1e-3 * 5 / 2e-3 = 2.5
    assert [(m.tau, m.v_th) for m in scaled.modules() if isinstance(m, LIF)] == [(0.5, 1.0 / 2.5)]
    with pytest.raises(ValueError, match=r"'lif'.*input gain .* must be > 0"):
        from_nir(_lif_graph(r=np.full(3, -1.0)), dt=1e-3)
    with pytest.raises(ValueError, match=r"'lif'.*v_leak=0\.1"):
        from_nir(_lif_graph(v_leak=np.full(3, 0.1)), dt=1e-3)
    with pytest.raises(ValueError, match=r"'lif'.*v_threshold differs between neurons"):
        from_nir(_lif_graph(v_threshold=np.array([1.0, 1.0, 2.0])), dt=1e-3)


def test_static_input_needs_timesteps():
    net = from_nir(_lif_graph(), dt=1e-3)
    with pytest.raises(ValueError, match="timesteps="):
        net(torch.rand(2, 3))  # [N, F] static input; the graph records no timesteps
    assert net(torch.rand(4, 2, 3)).shape == (2, 3)  # frames [T, N, F] need none
    with pytest.raises(ValueError, match=r"expected frames \[T, N, 3\]"):
        net(torch.rand(4, 2, 5))
