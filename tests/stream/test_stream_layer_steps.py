"""A step is the model's own forward on a one-step sequence: which module types it runs, how it refuses one it does
not know, how the list grows, and that every module, containers included, is called at every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TimeDistributed
from tdbn.layers import MeanOverTime
from tdbn.layers import stepping
from tdbn.stream import init_state, register_step, step
from tdbn.stream.layer_steps import STEPPABLE, steppable

T, N = 3, 2


def _stream(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state = init_state(model, x.shape[1])
    for t in range(x.shape[0]):
        scores, state = step(model, x[t], state)
    return scores


def _net(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(TimeDistributed(nn.Linear(6, 8)), LIF(v_th=0.3), *layers).eval()


def test_every_module_type_of_the_registered_models_is_steppable():
    for name in tdbn.models.names():
        model = tdbn.models.create(name, num_classes=3, width=1 / 16, timesteps=2, **(
            {"depth": 8} if "depth" in tdbn.models.options_of(name) else {}))
        for m in (model, tdbn.fuse(model.eval())):
            missing = {type(sub).__name__ for sub in m.modules() if not steppable(sub)}
            assert not missing, f"{name}: {missing}"


def test_a_sequential_ending_in_mean_over_time_streams_like_its_forward():
    model = _net(TimeDistributed(nn.Linear(8, 4)), MeanOverTime())
    x = torch.randn(T, N, 6)
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(_stream(model, x), ref)


def test_every_module_runs_its_forward_at_every_step():
    """Forward hooks see every step on every module (containers, conv and fc layers included), with the step's
    one-step sequence; the LIF's hook sees its input current, not a potential made for it."""
    model = tdbn.models.create("resnet19", num_classes=3, width=1 / 16, timesteps=2, input_size=8).eval()
    seen: dict[str, list[tuple[int, ...]]] = {}
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: seen.setdefault(name, []).append(
        tuple(args[0].shape))) for name, m in model.named_modules() if name and not isinstance(m, (nn.Conv2d,
                                                                                                  nn.Linear))]
    frames = torch.rand(2, 1, 3, 8, 8)
    _stream(model, frames)
    for h in hooks:
        h.remove()
    lif = next(n for n, m in model.named_modules() if type(m) is LIF)
    assert len(seen[lif]) == 2 and seen[lif][0][0] == 1  # two steps, each a one-step sequence [1, N, ...]
    assert len(seen["body"]) == 2 and len(seen["encoder"]) == 2
    assert stepping.current() is None  # nothing left behind


def test_unknown_module_type_is_named_with_its_place():
    model = _net(nn.ReLU())
    with pytest.raises(TypeError, match=r"cannot step ReLU '2': ReLU is not known to compute each time step on its "
                                        r"own.*register_step\(ReLU\)"):
        step(model, torch.randn(N, 6), init_state(model, N))


def test_a_subclass_that_overrides_forward_is_not_stepped_as_its_base():
    class Louder(LIF):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(TimeDistributed(nn.Linear(6, 8)), Louder()).eval()
    assert not steppable(Louder()) and steppable(type("Same", (LIF,), {})())
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
    assert register_step(Scale) is Scale
    try:
        with torch.no_grad():
            assert torch.equal(_stream(model, x), model(x).mean(0))
    finally:
        STEPPABLE.discard(Scale)
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        register_step(lambda module, x, walk: x)


def test_a_compiled_model_is_refused_and_compiling_ignores_streams():
    """A stream runs the eager model: ``torch.compile``'s wrapper is refused by name; a graph compiled for
    training never consults a stream's step (the layers' check is a constant there)."""
    model = _net(TimeDistributed(nn.Linear(8, 4)))
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(TypeError, match="OptimizedModule"):
        step(compiled, torch.randn(N, 6), init_state(model, N))
    x = torch.randn(T, N, 6)
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))
