"""NIR export of a trained network on real data: our round trip, and snnTorch's NIR importer as a third party.

A narrow ResNet-19 (width 1/16, T=2) is trained for 300 SGD steps on real MNIST digits (downsized to 14x14 to keep
the test fast; about 87 % on the test digits, so that few decisions are near-ties), exported to a ``.nir`` file, and
run three ways on real test digits: the fused model, ``tdbn.export.from_nir`` and snnTorch. Third parties
(snnTorch, onnxruntime) sum in another order than tdbn, so they are compared on the network put on a dyadic grid
(tie_free.py), where no potential lies near the threshold and every spike must agree on any CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF
from tdbn.export import from_nir, write_nir
from consumers import Agreement, agreement, run
from tie_free import INPUT_STEP, STEP, min_threshold_gap, tie_free

TRAIN_STEPS = 300
N_TEST = 200


def _digits(x: np.ndarray) -> torch.Tensor:
    # [N, 28, 28] uint8 -> [N, 1, 14, 14] in [0, 1]
    return nn.functional.avg_pool2d(torch.from_numpy(x).float().div(255).unsqueeze(1), 2)


@pytest.fixture(scope="module")
def trained(shared_mnist: Path):
    path = shared_mnist / "mnist" / "mnist.npz"
    if not path.is_file():
        pytest.fail(f"MNIST not found at {path} (expected ../shared/data/mnist/mnist.npz)")
    data = np.load(path)
    x, y = _digits(data["x_train"][:10000]), torch.from_numpy(data["y_train"][:10000]).long()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = tdbn.models.create("resnet19", num_classes=10, in_channels=1, width=1 / 16, timesteps=2, input_size=14)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # appendix C
    model.train()
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = _digits(data["x_test"][:N_TEST]), torch.from_numpy(data["y_test"][:N_TEST]).long()
    return model, xt, yt


@pytest.fixture(scope="module")
def nir_file(trained, tmp_path_factory) -> Path:
    model, _, _ = trained
    path = tmp_path_factory.mktemp("nir") / "resnet19_mnist.nir"
    write_nir(model, path, input_shape=(1, 14, 14), portable=False)  # the literal form: from_nir is bit-exact
    return path


def compare_with_snntorch(path: Path, frames: torch.Tensor) -> Agreement:
    """snnTorch running ``path`` against ``from_nir(path)`` on ``frames [T, N, ...]``."""
    ours = from_nir(path)
    with torch.no_grad():
        nodes = ours.forward_nodes(frames)
    out, spikes = run("snntorch", path, frames)
    return agreement(nodes, nodes["output"].mean(0), out, spikes)


def _lif_outputs(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
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


def test_model_is_trained(trained):
    model, xt, yt = trained
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"\nResNet-19 (width 1/16, T=2) after {TRAIN_STEPS} SGD steps: {acc:.1%} on {N_TEST} MNIST test digits")
    assert acc > 0.5, f"the test model did not learn (accuracy {acc:.2f} after {TRAIN_STEPS} steps)"


def test_round_trip_identical_spikes_and_outputs(trained, nir_file):
    model, xt, _ = trained
    fused = tdbn.fuse(model)
    ours, out = _lif_outputs(fused, xt)
    net = from_nir(nir_file)
    with torch.no_grad():
        nodes = net.forward_nodes(xt)
        back = net(xt)
    assert len(ours) == 18  # encoder, 8 blocks x 2, spiking fc
    for name, spikes in ours.items():
        assert torch.equal(nodes[name], spikes), f"spikes differ at {name}"
    assert torch.equal(back, out)
    # event-style input: the same images as T explicit frames give the same result
    frames = xt.unsqueeze(0).expand(model.timesteps, *xt.shape)
    with torch.no_grad():
        assert torch.equal(net(frames), out)


def test_round_trip_predictions_match_unfused_model(trained, tmp_path: Path):
    """Fusion folds the tdBN scales into the weights, which rounds differently from the unfused network; in float32 a
    potential within that rounding of the threshold (where one lies depends on the CPU) flips a spike. In float64
    no potential comes that close: the file read back predicts exactly what the unfused network predicts."""
    model, xt, _ = trained
    wide = copy.deepcopy(model).double()
    path = tmp_path / "float64.nir"
    write_nir(wide, path, input_shape=(1, 14, 14), portable=False)
    net = from_nir(path).double()
    with torch.no_grad():
        assert torch.equal(net(xt.double()).argmax(1), wide(xt.double()).argmax(1))


def test_snntorch_runs_the_file_the_same(trained, tmp_path: Path):
    """snnTorch (other batch shapes, so another float summation order) on the trained network put on a dyadic grid
    (tie_free.py: no potential near the threshold): every spike and prediction identical, on any CPU."""
    model, xt, _ = trained
    fused, x = tie_free(model, xt)
    assert min_threshold_gap(fused, x) >= STEP * INPUT_STEP / 16
    path = tmp_path / "tie_free.nir"
    write_nir(fused, path, input_shape=(1, 14, 14), portable=False)
    frames = x.unsqueeze(0).expand(2, *x.shape)  # NIR input: the static image at every step
    agreement = compare_with_snntorch(path, frames)
    print(f"\nsnnTorch on {path.name}: {agreement.summary()}")
    assert agreement.layers == 18
    assert agreement.same_predictions == N_TEST
    assert agreement.spikes_equal == agreement.spikes_compared
    assert agreement.max_output_diff < 1e-4


def test_snntorch_with_another_time_step_is_another_network(trained, tmp_path: Path):
    # snnTorch's importer always simulates with dt = 1e-4 s: a graph written for dt = 1e-3 s is read as neurons
    # with decay 1 - 0.1 * (1 - tau) = 0.925 and threshold v_th / 0.1, so its spikes and predictions differ
    model, xt, _ = trained
    path = tmp_path / "dt1e-3.nir"
    write_nir(model, path, input_shape=(1, 14, 14), dt=1e-3)
    frames = xt.unsqueeze(0).expand(2, *xt.shape)
    agreement = compare_with_snntorch(path, frames)
    print(f"\nsnnTorch on a graph written for dt=1e-3: {agreement.summary()}")
    assert agreement.layers_identical < agreement.layers
    assert agreement.spike_agreement < 0.99


def test_onnxruntime_on_real_digits(trained, tmp_path: Path):
    import onnxruntime as ort

    from tdbn.export.onnx import to_onnx

    model, xt, _ = trained
    fused, x = tie_free(model, xt)  # no potential near the threshold: onnxruntime's float order cannot flip a spike
    path = to_onnx(fused, tmp_path / "resnet19_mnist.onnx", x[:1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = fused(x)
    diff = float((torch.from_numpy(scores) - ref).abs().max())
    same = int((torch.from_numpy(scores).argmax(1) == ref.argmax(1)).sum())
    print(f"\nonnxruntime on {N_TEST} MNIST test digits: {same}/{N_TEST} identical predictions, max |diff| {diff:.3g}")
    assert same == N_TEST and diff < 1e-4
