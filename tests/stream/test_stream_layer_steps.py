"""The table of step functions: what it covers, how it refuses a module type it does not know, how it grows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TimeDistributed
from tdbn.layers import MeanOverTime
from tdbn.stream import init_state, register_step, step
from tdbn.stream.layer_steps import STEP_FUNCTIONS, step_function

T, N = 3, 2


def _stream(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state = init_state(model, x.shape[1])
    for t in range(x.shape[0]):
        scores, state = step(model, x[t], state)
    return scores


def _net(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(TimeDistributed(nn.Linear(6, 8)), LIF(v_th=0.3), *layers).eval()


def test_every_module_type_of_the_registered_models_has_a_step_function():
    for name in tdbn.models.names():
        model = tdbn.models.create(name, num_classes=3, width=1 / 16, timesteps=2, **(
            {"depth": 8} if "depth" in tdbn.models.options_of(name) else {}))
        for m in (model, tdbn.fuse(model.eval())):
            missing = {type(sub).__name__ for sub in m.modules() if step_function(sub) is None}
            assert not missing, f"{name}: {missing}"


def test_a_sequential_ending_in_mean_over_time_streams_like_its_forward():
    model = _net(TimeDistributed(nn.Linear(8, 4)), MeanOverTime())
    x = torch.randn(T, N, 6)
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(_stream(model, x), ref)


def test_unknown_module_type_is_named_with_its_place():
    model = _net(nn.ReLU())
    with pytest.raises(TypeError, match=r"cannot step ReLU '2': no step function for ReLU.*register_step\(ReLU\)"):
        step(model, torch.randn(N, 6), init_state(model, N))


def test_a_subclass_that_overrides_forward_is_not_stepped_as_its_base():
    class Louder(LIF):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(TimeDistributed(nn.Linear(6, 8)), Louder()).eval()
    assert step_function(Louder()) is None and step_function(type("Same", (LIF,), {})()) is STEP_FUNCTIONS[LIF]
    with pytest.raises(TypeError, match="Louder.*overrides forward"):
        step(model, torch.randn(N, 6), init_state(model, N))


def test_mean_over_time_must_come_last():
    model = _net(MeanOverTime(), nn.Identity())
    with pytest.raises(ValueError, match="MeanOverTime must be the model's last layer"):
        step(model, torch.randn(N, 6), init_state(model, N))


def test_register_step_adds_a_module_type():
    class Scale(nn.Module):  # a stateless time-first layer
        def forward(self, x):
            return 0.5 * x

    model = _net(Scale(), TimeDistributed(nn.Linear(8, 4)))
    x = torch.randn(T, N, 6)
    with pytest.raises(TypeError, match="Scale"):
        _stream(model, x)
    register_step(Scale)(lambda module, x_t, walk: module(x_t))
    try:
        with torch.no_grad():
            assert torch.equal(_stream(model, x), model(x).mean(0))
    finally:
        del STEP_FUNCTIONS[Scale]
