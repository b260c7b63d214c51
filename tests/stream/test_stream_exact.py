"""A step's conv and fc layers equal their rows of the multi-step forward's T*N-sample call, by measured plans."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdbn
from tdbn.stream import exact
from tdbn.stream.exact import in_batch, kernel_plan

T = 4
LAYERS = {  # the kinds of layers the paper's networks use, at small sizes
    "encoding conv 3x3": (lambda: nn.Conv2d(2, 8, 3, padding=1), (2, 16, 16)),
    "conv 3x3 stride 2": (lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1), (8, 16, 16)),
    "projection 1x1 stride 2": (lambda: nn.Conv2d(8, 16, 1, stride=2, bias=False), (8, 16, 16)),
    "conv 1x1": (lambda: nn.Conv2d(16, 16, 1), (16, 8, 8)),
    "conv 7x7 stride 2": (lambda: nn.Conv2d(3, 8, 7, stride=2, padding=3), (3, 32, 32)),
    "fc": (lambda: nn.Linear(256, 32), (256,)),
    "decoding fc": (lambda: nn.Linear(32, 10), (32,)),
}


@pytest.fixture
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_a_step_equals_its_rows_of_the_multi_step_call(kind: str, n: int, threads: int):
    make, shape = LAYERS[kind]
    layer = make().eval()
    x = torch.poisson(torch.full((T * n, *shape), 0.5))  # [T*N, ...], spike-count-like
    with torch.no_grad():
        ref = layer(x)
        for t in range(T):
            rows = slice(t * n, (t + 1) * n)
            assert torch.equal(in_batch(layer, x[rows], samples=T * n, row=t * n), ref[rows]), (kind, t)
    assert kernel_plan(layer, x[:n], T * n) in exact.PLANS


def test_the_padded_plan_is_right_by_construction(monkeypatch):
    """With no candidate kernel, every layer takes the multi-step forward's own call on zero-padded rows."""
    monkeypatch.setattr(exact, "_plans", {})
    monkeypatch.setattr(exact, "_candidates", lambda layer, x: [])
    for make, shape in LAYERS.values():
        layer = make().eval()
        x = torch.poisson(torch.full((T, *shape), 0.5))  # N = 1
        with torch.no_grad():
            ref = layer(x)
            assert all(torch.equal(in_batch(layer, x[t:t + 1], samples=T, row=t), ref[t:t + 1]) for t in range(T))
        assert kernel_plan(layer, x[:1], T) == "padded"


def test_a_candidate_that_rounds_differently_is_rejected(monkeypatch):
    monkeypatch.setattr(exact, "_plans", {})
    monkeypatch.setitem(exact._KERNELS, "direct", lambda layer, x, w, b: nn.functional.linear(x, w, b) * (1 + 2 ** -20))
    layer = nn.Linear(64, 8)
    assert kernel_plan(layer, torch.zeros(2, 64), 2 * T) == "padded"


def test_probing_leaves_the_global_random_state_alone(monkeypatch):
    monkeypatch.setattr(exact, "_plans", {})
    conv = nn.Conv2d(4, 4, 3, padding=1)
    before = torch.get_rng_state()
    assert kernel_plan(conv, torch.zeros(1, 4, 8, 8), T) in exact.PLANS
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_every_conv_of_the_full_width_networks_has_a_fast_plan(threads: int):
    """One stream (N = 1) through full-width ResNet-17 and ResNet-19: PyTorch's CPU kernels round one sample
    differently from a batch of T for several of these convs (tests/stream/test_stream_step.py), and a kernel on
    the single sample must still reproduce the batch. If a torch release breaks that, streaming stays exact but
    runs every conv over T samples: this test says so."""
    inputs: dict[nn.Conv2d, torch.Tensor] = {}
    for name, (c, size) in {"resnet17": (2, 32), "resnet19": (2, 42)}.items():
        model = tdbn.models.create(name, num_classes=10, in_channels=c, width=1.0, timesteps=8, input_size=size).eval()
        convs = [m for m in model.modules() if type(m) is nn.Conv2d]
        hooks = [m.register_forward_pre_hook(lambda m, args: inputs.setdefault(m, args[0])) for m in convs]
        with torch.no_grad():
            model.forward_steps(torch.zeros(1, 1, c, size, size))  # one step: each conv sees [N=1, C, H, W]
        for h in hooks:
            h.remove()
        plans = {kernel_plan(conv, inputs[conv], samples=8) for conv in convs}
        assert plans <= {"direct", "onednn"}, f"{name}: a conv falls back to the padded plan ({plans})"
