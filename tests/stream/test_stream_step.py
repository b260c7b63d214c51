"""Step-by-step inference equals the multi-step forward bit for bit, for every model; states are independent."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF
from tdbn.export import from_nir, to_nir
from tdbn.stream import Stream, StreamState, init_state, lif_step, step
from tiny_models import tiny_model

SIZE, T, N = 16, 4, 2


def _model(name: str, *, in_channels: int = 2, timesteps: int = T) -> nn.Module:
    """A tiny model with non-trivial tdBN statistics (set by two training-mode passes), in eval mode."""
    return tiny_model(name, in_channels=in_channels, timesteps=timesteps, size=SIZE, weight=(0.8, 1.8),
                      bias=(-0.1, 0.3), warm_input=lambda: _frames(in_channels, timesteps))


def _frames(channels: int = 2, timesteps: int = T, n: int = N) -> torch.Tensor:
    """Event-count-like frames ``[T, N, C, H, W]``."""
    return torch.poisson(torch.full((timesteps, n, channels, SIZE, SIZE), 0.4))


def _record(model: nn.Module, fn) -> tuple[dict[str, list[torch.Tensor]], object]:
    """Run ``fn()`` while recording the output of every LIF module (a list per module, one entry per call)."""
    spikes: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: spikes.setdefault(n, []).append(o.clone()))
             for name, m in model.named_modules() if isinstance(m, LIF)]
    try:
        with torch.no_grad():
            result = fn()
    finally:
        for h in hooks:
            h.remove()
    return spikes, result


def _streamed(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Spikes of every LIF ``[T, N, ...]`` and the scores after each step, feeding ``x [T, N, ...]`` step by step."""
    def run():
        state, scores = init_state(model, x.shape[1]), []
        for t in range(x.shape[0]):
            s, state = step(model, x[t], state)
            scores.append(s)
        return scores
    spikes, scores = _record(model, run)
    return {k: torch.cat(v) for k, v in spikes.items()}, scores


def _assert_equivalent(model: nn.Module, x: torch.Tensor) -> None:
    ref_spikes, ref_steps = _record(model, lambda: model.forward_steps(x))
    ref_spikes = {k: v[0] for k, v in ref_spikes.items()}
    spikes, scores = _streamed(model, x)
    assert set(spikes) == set(ref_spikes) and len(spikes) > 0
    for name in ref_spikes:
        assert torch.equal(spikes[name], ref_spikes[name]), f"spikes of {name} differ"
    fired = torch.cat([s.flatten() for s in spikes.values()])
    assert 0 < fired.mean() < 1  # the comparison is not between all-silent (or all-firing) layers
    with torch.no_grad():
        assert torch.equal(scores[-1], model(x))
        for k in range(1, x.shape[0] + 1):  # anytime: after k steps, the mean of the first k outputs
            assert torch.equal(scores[k - 1], ref_steps[:k].mean(0))


@pytest.mark.parametrize("n", [1, N])
@pytest.mark.parametrize("name", tdbn.models.names())
def test_every_model_streams_like_its_multi_step_forward(name: str, n: int):
    model = _model(name)
    _assert_equivalent(model, _frames(n=n))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fused", [False, True])
def test_full_width_resnet17_batch_one(fused: bool, threads: int):
    """The DVS128 Gesture network at full width, one stream: here PyTorch's conv and fc kernels would round
    differently for 1 and T samples, which the step's stateless layers account for (tdbn.stream.exact)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = tdbn.models.create("resnet17", num_classes=11, width=1.0, timesteps=8, input_size=32)
        with torch.no_grad():
            model.train()(torch.poisson(torch.full((3, 2, 2, 32, 32), 0.4)))
        model = tdbn.fuse(model.eval()) if fused else model.eval()
        _assert_equivalent(model, torch.poisson(torch.full((8, 1, 2, 32, 32), 0.4)))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("name", ["resnet17", "resnet19"])
def test_static_images_streamed_as_repeated_frames(name: str):
    model = _model(name, in_channels=3)
    image = torch.rand(N, 3, SIZE, SIZE)
    _, scores = _streamed(model, image.unsqueeze(0).expand(T, *image.shape))
    with torch.no_grad():
        assert torch.equal(scores[-1], model(image))  # the static path: encoding conv once, repeated over T


@pytest.mark.parametrize("name", ["resnet17", "plain"])
def test_fused_model_streams_like_its_multi_step_forward(name: str):
    fused = tdbn.fuse(_model(name))
    assert tdbn.export.count_norm_layers(fused) == 0
    _assert_equivalent(fused, _frames())


def test_nir_round_tripped_model_streams_like_its_multi_step_forward():
    model = _model("resnet19")
    net = from_nir(to_nir(model, input_shape=(2, SIZE, SIZE)))
    x = _frames()
    _assert_equivalent(net, x)
    with torch.no_grad():
        assert torch.equal(net(x), tdbn.fuse(model)(x))  # and the graph is the same network


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lif_step_is_the_kernel_recursion(dtype):
    x = torch.randn(12, 3, 50, dtype=dtype) * 0.6 + 0.3  # [T, N, F]
    ref_o, ref_u = tdbn.functional.lif(x, tau=0.25, v_th=0.5, return_membrane=True)
    u = None
    for t in range(x.shape[0]):
        o, u = lif_step(x[t:t + 1], u, tau=0.25, v_th=0.5)
        assert torch.equal(o[0], ref_o[t]) and torch.equal(u, ref_u[t])
    assert 0 < ref_o.mean() < 1


def test_two_streams_on_one_model_are_independent():
    model = _model("resnet17")
    xa, xb = _frames(), _frames()
    with torch.no_grad():
        ref_a, ref_b = model(xa), model(xb)
    sa, sb = init_state(model, N), init_state(model, N)
    for t in range(T):  # interleaved
        a, sa = step(model, xa[t], sa)
        b, sb = step(model, xb[t], sb)
    assert torch.equal(a, ref_a) and torch.equal(b, ref_b)
    assert not torch.equal(a, b)


def test_a_state_is_never_modified_and_can_be_branched():
    model = _model("resnet19")
    x = _frames()
    state = init_state(model, N)
    for t in range(2):
        _, state = step(model, x[t], state)
    before = {k: v.clone() for k, v in state.membranes.items()}
    s1, st1 = step(model, x[2], state)
    s2, st2 = step(model, x[3], state)  # another continuation from the same state
    s1_again, _ = step(model, x[2], state)
    assert torch.equal(s1, s1_again) and st1.steps == st2.steps == 3 and state.steps == 2
    assert all(torch.equal(before[k], v) for k, v in state.membranes.items())
    with torch.no_grad():
        assert torch.equal(s2, model(torch.cat([x[:2], x[3:]])))


def test_threads_streaming_one_model_do_not_mix():
    model = _model("resnet17")
    xs = [_frames() for _ in range(3)]
    with torch.no_grad():
        refs = [model(x) for x in xs]
    results: dict[int, torch.Tensor] = {}

    def worker(i: int) -> None:
        state = init_state(model, N)
        for t in range(T):
            scores, state = step(model, xs[i][t], state)
            with torch.no_grad():
                model(xs[i])  # an ordinary multi-step call meanwhile runs unaffected
        results[i] = scores

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(results[i], refs[i]) for i in range(3))
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_the_model_is_left_as_it_was():
    model = _model("resnet17")
    x = _frames()
    state = init_state(model, N)
    _, state = step(model, x[0], state)
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(ValueError, match="batch size"):
        step(model, x[0, :1], state)
    bad = init_state(model, N)
    with pytest.raises(ValueError):
        step(model, torch.zeros(N, 3, SIZE, SIZE), bad)  # wrong channels: the model raises inside the step
    assert not any("forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # multi-step forward still starts from u = 0


def test_stream_runner_restarts_every_window():
    model = _model("resnet19", timesteps=2)
    x = _frames(timesteps=6)
    stream = Stream(model, batch_size=N, window=2)
    scores = [stream.push(x[t]) for t in range(6)]
    with torch.no_grad():
        assert all(torch.equal(scores[k + 1], model(x[k:k + 2])) for k in (0, 2, 4))
    assert isinstance(stream.state, StreamState) and stream.state.steps == 2


def test_clear_errors():
    model = _model("resnet19")
    with pytest.raises(ValueError, match="eval"):
        init_state(model.train(), 1)
    model.eval()
    with pytest.raises(ValueError, match="batch_size"):
        init_state(model, 0)
    with pytest.raises(ValueError, match="no tdbn.LIF"):
        init_state(nn.Linear(3, 3).eval(), 1)
    with pytest.raises(TypeError, match="StreamState"):
        step(model, torch.zeros(1, 2, SIZE, SIZE), {"u": 0})
    with pytest.raises(ValueError, match="pass frames"):
        step(model, _frames(), init_state(model, N))  # the whole sequence instead of one step
    other = _model("resnet17")
    _, state = step(other, _frames()[0], init_state(other, N))
    with pytest.raises(ValueError, match="another model"):
        step(model, _frames()[0], state)
    shared = LIF()
    net = nn.Sequential(tdbn.TimeDistributed(nn.Linear(4, 4)), shared, tdbn.TimeDistributed(nn.Linear(4, 4)), shared)
    with pytest.raises(RuntimeError, match="twice"):
        step(net.eval(), torch.randn(1, 4), init_state(net, 1))
