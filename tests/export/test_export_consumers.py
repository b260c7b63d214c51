"""One portable ``.nir`` file, four simulators: each must give tdbn's predictions and (where exposed) spikes.

The network is ``tdbn.load(run, fuse=True)`` of a ResNet-19 trained by ``tdbn train`` (conftest), fed 100 test
digits at every one of its T steps: as a float graph put on a dyadic grid (tie_free.py), and as the 8- and 4-bit
integer graphs of ``tdbn.export.quantize`` (exact in float32 by construction; thresholds offset by half a membrane
quantum, so that SpikingJelly's ``>=`` decides as ``>`` where membranes land exactly on the integer threshold).
snnTorch and nirtorch are test dependencies; Norse and SpikingJelly are run in their own environments
(``TDBN_NORSE_PYTHON`` / ``TDBN_SPIKINGJELLY_PYTHON``, or those ``bench/consumer_envs.sh`` makes in
``.consumer-venvs/``, which ``make test`` runs; docs/export.md), since each pins its own nir / nirtorch.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

import tdbn
from tdbn import LIF
from tdbn.export import image_input_scale, quantize, write_nir
from tdbn.export.nir import write_graph
from consumers import agreement, run
from side_envs import need_side_python
from tie_free import INPUT_STEP, STEP, min_threshold_gap, tie_free

SIDE_ENVS = {"norse": "TDBN_NORSE_PYTHON", "spikingjelly": "TDBN_SPIKINGJELLY_PYTHON"}


@pytest.fixture(scope="module")
def reference(trained_run: Path, test_digits, tmp_path_factory):
    """``(nir file, frames [T, N, 1, 8, 8], LIF spikes by node name, time-averaged output [N, K])`` of tdbn, for the
    trained network put on a dyadic grid (tie_free.py): no potential within 1.5e-5 of the threshold, so every
    correct simulator gives exactly these spikes on any CPU, at any thread count, whatever its float order."""
    fused, x = tie_free(tdbn.load(trained_run), test_digits[0])
    assert min_threshold_gap(fused, x) >= STEP * INPUT_STEP / 16
    spikes: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: spikes.__setitem__(n, o))
             for name, m in fused.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        out = fused(x)
    for h in hooks:
        h.remove()
    assert len(set(out.argmax(1).tolist())) >= 5, "the test network predicts too few classes to compare"
    path = tmp_path_factory.mktemp("nir") / "resnet19.nir"
    write_nir(fused, path, input_shape=(1, 8, 8))
    frames = x.unsqueeze(0).expand(fused.timesteps, *x.shape).contiguous()
    return path, frames, spikes, out


def _check(consumer: str, reference, **kw) -> None:
    path, frames, spikes, out = reference
    theirs_out, theirs_spikes = run(consumer, path, frames, **kw)
    result = agreement(spikes, out, theirs_out, theirs_spikes)
    print(f"\n{consumer} on {path.name}: {result.summary()}")
    assert result.layers == 18  # encoder, 8 blocks x 2, spiking fc: every LIF exposed and compared
    assert result.same_predictions == result.samples == 100
    assert result.spikes_equal == result.spikes_compared, result.summary()  # every spike: no ties to break
    assert result.max_output_diff < 1e-4


def test_snntorch_gives_tdbns_predictions_and_spikes(reference):
    _check("snntorch", reference)


def test_nirtorch_interpreter_with_tdbns_node_map(reference):
    _check("nirtorch", reference)


def test_nirtorch_default_affine_map_drops_the_bias(reference):
    # the reason for tdbn.export.nirtorch_node_map's Affine entry: nirtorch 2.6 writes the bias where nothing reads it
    import nir
    import nirtorch

    graph = nir.read(str(reference[0]))
    fc = nirtorch.nir_to_torch(graph.nodes["decoder"], {})
    assert not torch.equal(fc.bias.detach(), torch.as_tensor(graph.nodes["decoder"].bias))


@pytest.mark.parametrize("consumer", sorted(SIDE_ENVS))
def test_side_environment_consumer(consumer: str, reference, tmp_path: Path):
    python = need_side_python(consumer, SIDE_ENVS[consumer])
    probe = subprocess.run([python, "-c", f"import {consumer}, nir, nirtorch, torch"], capture_output=True, text=True)
    if probe.returncode:
        pytest.fail(f"{SIDE_ENVS[consumer]}={python} cannot import {consumer}: {probe.stderr.strip()[-300:]}")
    _check(consumer, reference, python=python, workdir=tmp_path)


@pytest.fixture(scope="module", params=[8, 4], ids=["int8", "int4"])
def integer_reference(request, trained_run: Path, test_digits, tmp_path_factory):
    """``(integer nir file, quantized frames [T, N, 1, 8, 8], int64 spikes by LIF node, int64 output [T, N, K],
    neuron-steps whose membrane lands exactly on the threshold)`` of the trained network at 8 and 4 bits."""
    bits = request.param
    opts = tdbn.saved_config(trained_run).data.options
    net = quantize(tdbn.load(trained_run), bits=bits, input_shape=(1, 8, 8),
                   input_scale=image_input_scale(opts["mean"], opts["std"]))
    x = test_digits[0]
    ties: dict[str, int] = {}
    nodes = net.forward_nodes(x, ties=ties)
    path = tmp_path_factory.mktemp("nir") / f"int{bits}.nir"
    write_graph(net.to_nir(), path)  # portable form
    xi = net.quantize_input(x).float()
    frames = xi.unsqueeze(0).expand(net.timesteps, *xi.shape).contiguous()
    spikes = {n: v for n, v in nodes.items() if net.nodes[n].kind == "lif"}
    return path, frames, spikes, nodes["output"], sum(ties.values())


@pytest.mark.parametrize("consumer", ["snntorch", "nirtorch", "norse", "spikingjelly"])
def test_integer_graph_in_every_simulator(consumer: str, integer_reference, tmp_path: Path):
    """Every spike and every step's integer output of the int64 simulation, in each simulator (float32 holds these
    membranes exactly); SpikingJelly fires at ``>=``, the others at ``>``: the offset threshold makes them agree
    where membranes sit exactly on Theta (thousands of neuron-steps at 4 bits, counted here)."""
    kw = {}
    if consumer in SIDE_ENVS:
        kw = {"python": need_side_python(consumer, SIDE_ENVS[consumer]), "workdir": tmp_path}
    path, frames, spikes, out, ties = integer_reference
    theirs_out, theirs_spikes = run(consumer, path, frames, **kw)
    result = agreement(spikes, out.double().mean(0), theirs_out.double(), theirs_spikes)
    print(f"\n{consumer} on {path.name} ({ties} neuron-steps exactly on the threshold): {result.summary()}")
    if path.name == "int4.nir":
        assert ties > 0  # the case the offset exists for is exercised
    assert result.layers == 18
    assert result.spikes_equal == result.spikes_compared, result.summary()
    assert torch.equal(theirs_out.reshape(out.shape).double(), out.double())  # integers, every step
    assert result.same_predictions == result.samples == 100

