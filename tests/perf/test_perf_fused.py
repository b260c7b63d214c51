"""The lean training path (tdbn.functional.fused) equals the plain formulation, and it really runs.

Plain formulation = ``F.batch_norm`` tdBN + LIF saving ``u`` + layers saving float spikes, i.e. what autograd
stores inside ``lean_training(False)``. Float64 throughout, so that rounding cannot move a value across the
threshold and spikes must be identical.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, TdBatchNorm1d, TdBatchNorm2d, TimeDistributed
from tdbn.functional import fused, lif, td_batch_norm
from tdbn.functional.tdbn import td_batch_norm_plain

F64 = torch.float64


def _bn_args(C: int):
    w = torch.rand(C, dtype=F64) + 0.5
    b = torch.randn(C, dtype=F64) * 0.1
    return w.requires_grad_(), b.requires_grad_(), torch.randn(C, dtype=F64), torch.rand(C, dtype=F64) + 0.5


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 6), (4, 6, 7), (2, 3, 4, 5, 1)])
def test_td_batch_norm_train_matches_plain(shape):
    x = (torch.randn(shape, dtype=F64) * 2 + 0.3).requires_grad_()
    g = torch.randn(shape, dtype=F64)
    out = {}
    for name, fn in (("fast", fused.td_batch_norm_train), ("plain", td_batch_norm_plain)):
        torch.manual_seed(1)
        w, b, rm, rv = _bn_args(shape[2])
        kw = {"alpha": 0.7, "v_th": 0.5, "momentum": 0.1, "eps": 1e-5}
        if name == "plain":
            kw["training"] = True
        y = fn(x, rm, rv, w, b, **kw)
        grads = torch.autograd.grad(y, (x, w, b), g)
        out[name] = (y, *grads, rm, rv)
    for a, b in zip(out["fast"], out["plain"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_td_batch_norm_train_gradcheck():
    x = torch.randn(2, 3, 2, 3, 3, dtype=F64, requires_grad=True)
    w, b, _, _ = _bn_args(2)
    fn = lambda x, w, b: fused.td_batch_norm_train(x, None, None, w, b, alpha=0.8, v_th=0.5, momentum=0.1, eps=1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_td_batch_norm_train_rejects_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fused.td_batch_norm_train(torch.randn(1, 1, 3), None, None, None, None, alpha=1.0, v_th=0.5, momentum=0.1,
                                  eps=1e-5)


def _unit(C_in=2, C=4):
    return nn.Sequential(TimeDistributed(nn.Conv2d(C_in, C, 3, padding=1)), TdBatchNorm2d(C), LIF())


def test_lif_after_tdbn_stores_no_membrane_potentials():
    """Sentinel: the fast path ran (no u saved; spikes kept as a bool mask on the node)."""
    x = torch.randn(3, 2, 2, 5, 5, requires_grad=True)
    s = _unit()(x)
    node = s.grad_fn
    assert node.source is not None and isinstance(node.source[0], fused.TdBatchNormFunction._backward_cls)
    assert all(t is None for t in node.saved_tensors)
    assert node.tdbn_spikes and node.tdbn_spike_mask is None  # made when a layer first saves the spikes
    mask = fused.spike_mask(s)
    assert mask.dtype == torch.bool and torch.equal(mask, s.bool()) and fused.spike_mask(s) is mask
    with fused.lean_training(False):
        s2 = _unit()(x)
    assert s2.grad_fn.source is None and s2.grad_fn.saved_tensors[0].shape == x.shape[:2] + (4, 5, 5)


def test_conv_over_spikes_saves_the_mask(monkeypatch):
    """Sentinel: a conv reading spikes keeps the bool mask for its weight gradient and unpacks it in backward."""
    calls = []
    real = fused.unpack_mask
    monkeypatch.setattr(fused, "unpack_mask", lambda m, d: calls.append(m.dtype) or real(m, d))
    net = nn.Sequential(_unit(), TimeDistributed(nn.Conv2d(4, 3, 3, padding=1)))
    net(torch.randn(3, 2, 2, 5, 5)).sum().backward()
    assert torch.bool in calls


def _run(model: nn.Module, x: torch.Tensor, lean: bool):
    model = copy.deepcopy(model)
    with fused.lean_training(lean):
        out = model(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())


def _assert_same(a, b):
    assert torch.equal(a[0], b[0])
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], rtol=1e-10, atol=1e-12, msg=k)
    for k in a[2]:
        torch.testing.assert_close(a[2][k], b[2][k], rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.parametrize(
    "name, kw",
    [("resnet19", {}), ("resnet19", {"shortcut_norm": "projection"}), ("plain", {"depth": 6}),
     ("resnet17", {}), ("resnet19", {"surrogate": "sigmoid", "tau": 0.5})],
)
def test_models_lean_equals_plain(name, kw):
    torch.manual_seed(0)
    model = tdbn.models.create(name, num_classes=5, width=0.0625, timesteps=3, **kw).double()
    x = torch.randn(3, 2, 2, 32, 32, dtype=F64) if name == "resnet17" else torch.randn(2, 3, 32, 32, dtype=F64)
    sources = []
    hooks = [m.register_forward_hook(lambda m, i, o: sources.append(o.grad_fn.source)) for m in model.modules()
             if isinstance(m, LIF)]
    lean = _run(model, x, True)
    for h in hooks:
        h.remove()
    _assert_same(lean, _run(model, x, False))
    assert sources and all(s is not None for s in sources)  # every LIF recomputed its input


def test_residual_sum_is_recomputed_from_both_branches():
    bn_a, bn_b = TdBatchNorm2d(3), TdBatchNorm2d(3)
    za, zb = torch.randn(2, 2, 3, 4, 4, requires_grad=True), torch.randn(2, 2, 3, 4, 4, requires_grad=True)
    s = lif(bn_a(za) + bn_b(zb))
    assert len(s.grad_fn.source) == 2


def test_in_place_change_of_the_input_falls_back_to_storing_u():
    z = torch.randn(3, 2, 4, dtype=F64, requires_grad=True)
    bn = TdBatchNorm1d(4).double()

    def run(lean: bool):
        with fused.lean_training(lean):
            y = bn(z)
            with torch.no_grad():
                y.add_(0.3)  # invisible to autograd: the recomputed tdBN output would be stale
            s = lif(y)
        assert (s.grad_fn.source is None) if lean else True
        return s, torch.autograd.grad(s, z, torch.ones_like(s))[0]

    (s1, g1), (s2, g2) = run(True), run(False)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_activation_checkpointing_turns_lean_storage_off():
    from torch.utils.checkpoint import checkpoint

    unit = _unit().double()
    x = torch.randn(3, 2, 2, 5, 5, dtype=F64, requires_grad=True)
    s = checkpoint(unit, x, use_reentrant=False)
    (g1,) = torch.autograd.grad(s.sum(), x)
    with fused.lean_training(False):
        (g2,) = torch.autograd.grad(unit(x).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_hooks_on_lif_see_spikes_and_fuse_still_works():
    model = tdbn.models.create("resnet19", num_classes=4, width=0.0625, timesteps=2).double()
    seen = []
    h = model.body.stage1[0].lif.register_forward_hook(lambda m, i, o: seen.append(o))
    model(torch.randn(2, 3, 32, 32, dtype=F64)).sum().backward()
    h.remove()
    assert seen[0].shape[:2] == (2, 2) and set(seen[0].unique().tolist()) <= {0.0, 1.0}
    model.eval()
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(tdbn.fuse(model)(x), model(x), rtol=1e-9, atol=1e-9)


def test_eval_and_no_grad_take_the_plain_path():
    bn = TdBatchNorm2d(3)
    x = torch.randn(2, 2, 3, 4, 4, requires_grad=True)
    assert type(bn(x).grad_fn).__name__ == "TdBatchNormFunctionBackward"
    bn.eval()
    assert type(bn(x).grad_fn).__name__ != "TdBatchNormFunctionBackward"
    bn.train()
    y = td_batch_norm(x.bfloat16(), None, None, None, None, alpha=1.0, v_th=0.5, training=True, momentum=0.1,
                      eps=1e-5)
    assert type(y.grad_fn).__name__ != "TdBatchNormFunctionBackward"  # 16-bit floats: plain kernels
