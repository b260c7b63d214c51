"""The training units (tdbn.operators.unit_ops) equal the plain formulation, store what they claim, and really run.

Plain formulation = ``F.batch_norm`` tdBN + a LIF saving ``u`` + convs saving their float input, i.e. what the
modules do one after the other inside ``lean_training(False)``. Float64 wherever spikes must be identical, so
that rounding cannot move a value across the threshold.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tdbn
from tdbn import LIF, LIFParameters, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF, TimeDistributed
from tdbn.functional import td_batch_norm
from tdbn.operators import cpu as native
from tdbn.operators import pack_spikes, switches, td_batch_norm_train, td_bn_add_lif, td_bn_lif
from tdbn.functional.tdbn import td_batch_norm_plain
from saved_tensors import SavedBytes

F64 = torch.float64


def _bn_args(C: int):
    w = torch.rand(C, dtype=F64) + 0.5
    b = torch.randn(C, dtype=F64) * 0.1
    return w.requires_grad_(), b.requires_grad_(), torch.randn(C, dtype=F64), torch.rand(C, dtype=F64) + 0.5


def graph_ops(t: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``t``."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(fn.name())
        todo.extend(f for f, _ in fn.next_functions)
    return names


def has_op(names: set[str], op: str) -> bool:
    return any(f"tdbn_{op}_default" in n or f"tdbn_{op}_" in n and n.endswith("Backward") for n in names)


# ---- tdBN alone -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 6), (4, 6, 7), (2, 3, 4, 5, 1)])
def test_td_batch_norm_train_matches_plain(shape):
    x = (torch.randn(shape, dtype=F64) * 2 + 0.3).requires_grad_()
    g = torch.randn(shape, dtype=F64)
    out = {}
    for name, fn in (("fast", td_batch_norm_train), ("plain", td_batch_norm_plain)):
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
    fn = lambda x, w, b: td_batch_norm_train(x, None, None, w, b, alpha=0.8, v_th=0.5, momentum=0.1, eps=1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_td_batch_norm_train_rejects_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        td_batch_norm_train(torch.randn(1, 1, 3), None, None, None, None, alpha=1.0, v_th=0.5, momentum=0.1,
                                  eps=1e-5)


# ---- the tdBN + LIF unit ----------------------------------------------------------------------------------


def _unit(C_in=2, C=4, spikes_in=False):
    return TdBNLIF(TimeDistributed(nn.Conv2d(C_in, C, 3, padding=1)), TdBatchNorm2d(C), LIF(), spikes_in=spikes_in)


def _pair(shape, p: LIFParameters, alpha=1.0):
    torch.manual_seed(2)
    bn = TdBatchNorm2d(shape[2], alpha=alpha, v_th=p.v_th).double() if len(shape) == 5 else \
        TdBatchNorm1d(shape[2], alpha=alpha, v_th=p.v_th).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn, copy.deepcopy(bn)


@pytest.mark.parametrize("native_on", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "1d"])
@pytest.mark.parametrize("p", [LIFParameters(), LIFParameters(tau=0.5, v_th=0.3, surrogate="atan", surrogate_width=0.7)])
def test_td_bn_lif_equals_modules_in_float64(native_on, layout, p):
    """Every implementation (compiled CPU kernels; the plain PyTorch reference with them off) equals the
    modules run one after the other: spikes, input/weight/bias gradients, running statistics."""
    shape = (4, 3, 6, 5, 5) if layout != "1d" else (5, 4, 7)
    z0 = torch.randn(shape, dtype=F64) * 0.8 + 0.2
    if layout == "channels_last":
        z0 = z0.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    g = torch.randn(shape, dtype=F64)
    bn1, bn2 = _pair(shape, p)
    z1, z2 = z0.clone().requires_grad_(), z0.clone().requires_grad_()
    with native.enabled(native_on):
        s1 = td_bn_lif(z1, bn1.unit_args(z1), p)
        s1.backward(g)
    with switches.lean_training(False):
        s2 = tdbn.functional.lif(bn2(z2), p)
        s2.backward(g)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-11, atol=1e-12)
    for a, b in [(bn1.weight.grad, bn2.weight.grad), (bn1.bias.grad, bn2.bias.grad), (bn1.running_mean, bn2.running_mean),
                 (bn1.running_var, bn2.running_var), (bn1.num_batches_tracked, bn2.num_batches_tracked)]:
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_unit_stores_no_membrane_potentials():
    """What the unit saves, seen through saved_tensors_hooks: its input z and per-channel vectors, no [T, ...]
    membrane tensor; the plain formulation saves z (in F.batch_norm) and u (in the LIF)."""
    unit = _unit()
    x = torch.randn(3, 2, 2, 5, 5)
    with SavedBytes() as lean:
        s = unit(x)
    assert has_op(graph_ops(s), "td_bn_lif_forward")  # sentinel: the unit operator ran
    big = lean.big(3 * 2 * 4 * 5 * 5)
    assert len(big) == 1 and big[0].dtype == torch.float32  # z only (the conv output)
    with switches.lean_training(False), SavedBytes() as plain:
        unit(x)
    assert len(plain.big(3 * 2 * 4 * 5 * 5)) == 2  # z and u


def test_unit_under_bf16_autocast_stores_low_precision():
    """Under autocast the unit takes the bf16 conv output, stores it in bf16 (no float32 [T, ...] tensor at all),
    and returns exact 0/1 spikes in bf16; gradients follow the float32 unit on the rounded input."""
    torch.manual_seed(0)
    unit = _unit(C=8, spikes_in=True)
    x = (torch.rand(3, 2, 2, 6, 6) > 0.6).float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16), SavedBytes() as saved:
        s = unit(x)
    n = 3 * 2 * 8 * 6 * 6
    assert s.dtype == torch.bfloat16 and set(s.unique().tolist()) <= {0.0, 1.0}
    big = saved.big(3 * 2 * 2 * 6 * 6)
    assert big and all(t.dtype == torch.bfloat16 for t in big), [(t.dtype, t.shape) for t in big]
    assert sum(t.numel() * t.element_size() for t in big) == 2 * n  # z (bf16); the input's bits are smaller
    g = torch.randn(s.shape)
    s.float().backward(g)
    # the float32 unit on the bf16-rounded conv output
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        z_bf16 = unit.conv(x.detach())
    assert z_bf16.dtype == torch.bfloat16
    z = z_bf16.float().requires_grad_()
    ref = copy.deepcopy(unit.bn).train()
    ref.running_mean.zero_(), ref.running_var.fill_(1)
    s_ref = td_bn_lif(z, ref.unit_args(z), unit.lif.params)
    assert torch.equal(s.float(), s_ref)
    s_ref.backward(g)
    torch.testing.assert_close(unit.bn.weight.grad, ref.weight.grad, rtol=2e-2, atol=1e-3)


def test_conv_over_spikes_saves_the_mask():
    """A unit reading spikes keeps their bits for its conv's weight gradient, not the float spikes."""
    net = nn.Sequential(_unit(), _unit(4, 3, spikes_in=True)).double()
    ref = copy.deepcopy(net)
    x = torch.randn(3, 2, 2, 5, 5, dtype=F64)
    with SavedBytes() as saved:
        s = net(x)
    spikes_shape = (3 * 2, 4, 5, 5)
    n = 3 * 2 * 4 * 5 * 5
    assert any(t.dtype == torch.uint8 and tuple(t.shape) == ((n + 7) // 8,) for t in saved.saved)
    assert not any(t.is_floating_point() and tuple(t.shape) == spikes_shape for t in saved.saved)
    assert has_op(graph_ops(s), "spike_conv2d")
    s.sum().backward()
    with switches.lean_training(False):
        ref(x).sum().backward()
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-11, atol=1e-12, msg=name)


@pytest.mark.parametrize("shortcut", ["tdbn", "identity", "projection"])
def test_residual_junction_equals_modules(shortcut):
    p = LIFParameters(tau=0.5)
    shape = (3, 2, 4, 5, 5)
    torch.manual_seed(1)
    x = (torch.rand(shape, dtype=F64) > 0.5).to(F64).requires_grad_()
    za = (torch.randn(shape, dtype=F64)).requires_grad_()
    bn_a, bn_a2 = _pair(shape, p, alpha=2 ** -0.5)
    bn_b, bn_b2 = _pair(shape, p, alpha=2 ** -0.5)
    conv = nn.Conv2d(4, 4, 1).double()
    g = torch.randn(shape, dtype=F64)

    def plain():
        with switches.lean_training(False):
            zb = TimeDistributed(conv)(x) if shortcut == "projection" else x
            yb = zb if shortcut == "identity" else bn_b2(zb)
            return tdbn.functional.lif(bn_a2(za) + yb, p)

    s2 = plain()
    ga2, gx2 = torch.autograd.grad(s2, (za, x), g)
    zb = TimeDistributed(conv)(x) if shortcut == "projection" else x
    mask = tdbn.operators.pack_spikes(x) if shortcut != "projection" else None
    nb = None if shortcut == "identity" else bn_b.unit_args(zb)
    with SavedBytes() as saved:
        s1 = td_bn_add_lif(za, bn_a.unit_args(za), zb, nb, p, zb_mask=mask)
    assert has_op(graph_ops(s1), "td_bn_add_lif_forward")
    floats = [t for t in saved.saved if t.is_floating_point() and t.shape == shape]
    assert len(floats) == (2 if shortcut == "projection" else 1)  # za (and the projection's output); x as bits
    ga1, gx1 = torch.autograd.grad(s1, (za, x), g)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(ga1, ga2, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(gx1, gx2, rtol=1e-11, atol=1e-12)
    for a, b in [(bn_a.running_mean, bn_a2.running_mean), (bn_a.running_var, bn_a2.running_var),
                 (bn_b.running_mean, bn_b2.running_mean), (bn_b.running_var, bn_b2.running_var)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- the compiled unit kernels: one pass, any storage dtype ---------------------------------------------


def _run_unit(kind: str, z: torch.Tensor, zb: torch.Tensor | None, g: torch.Tensor, p: LIFParameters, bns):
    """Spikes, gradients (z, zb, tdBN parameters) and running statistics of one training step of a unit."""

    z = z.detach().clone().requires_grad_()
    zb = None if zb is None else zb.detach().clone().requires_grad_()
    bn_a, bn_b = bns
    if kind == "td_bn_lif":
        s = td_bn_lif(z, bn_a.unit_args(z), p)
    elif kind == "junction_tdbn":
        s = td_bn_add_lif(z, bn_a.unit_args(z), zb, bn_b.unit_args(zb), p)
    else:  # an identity shortcut of spikes, kept as bits
        s = td_bn_add_lif(z, bn_a.unit_args(z), zb, None, p, zb_mask=pack_spikes(zb))
    s.backward(g.to(s.dtype))
    out = [s, z.grad] + ([] if zb is None else [zb.grad])
    for bn in bns if kind == "junction_tdbn" else bns[:1]:
        out += [bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]
    return out


def _unit_case(kind: str, layout: str, dtype: torch.dtype):
    torch.manual_seed(5)
    shape = (4, 3, 6, 5, 5) if layout != "1d" else (5, 4, 7)
    z = torch.randn(shape) * 0.8 + 0.2
    zb = None
    if kind == "junction_tdbn":
        zb = torch.randn(shape) * 0.6 - 0.1
    elif kind == "junction_identity":
        zb = (torch.rand(shape) > 0.6).float()
    if layout == "channels_last":
        def cl(t):
            return t.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
        z, zb = cl(z), (None if zb is None else cl(zb))
    g = torch.randn(shape).to(dtype)  # representable in dtype
    z, zb = z.to(dtype), (None if zb is None else zb.to(dtype))
    bns = []
    for _ in range(2):
        bn = TdBatchNorm2d(shape[2], alpha=2 ** -0.5) if len(shape) == 5 else TdBatchNorm1d(shape[2])
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        bns.append(bn)
    return z, zb, g, bns


KINDS = ["td_bn_lif", "junction_tdbn", "junction_identity"]
SURROGATES = [LIFParameters(), LIFParameters(tau=0.5, v_th=0.3, surrogate="atan", surrogate_width=0.7)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "1d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", SURROGATES)
def test_one_pass_unit_kernels_equal_the_kernel_composition_bit_for_bit(monkeypatch, kind, layout, dtype, p):
    """The one-pass unit kernels (tdBN output and LIF without a [T, ...] temporary; backward recomputing y and
    u per block) give exactly the results of the composition they replace (tdBN affine kernel, sum, LIF
    kernels): the float32 and float64 training step is bit-identical to the previous release."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    from tdbn.operators import unit_ops as units

    z, zb, g, bns = _unit_case(kind, layout, dtype)
    bns = [bn.to(dtype) for bn in bns]
    before = native.calls["unit_forward"], native.calls["unit_backward"]
    one_pass = _run_unit(kind, z, zb, g, p, copy.deepcopy(bns))
    assert (native.calls["unit_forward"], native.calls["unit_backward"]) == (before[0] + 1, before[1] + 1)
    monkeypatch.setattr(units, "_one_pass", lambda *a: False)  # the composition of the previous release
    composed = _run_unit(kind, z, zb, g, p, copy.deepcopy(bns))
    assert native.calls["unit_forward"] == before[0] + 1
    for i, (a, b) in enumerate(zip(one_pass, composed)):
        if kind == "td_bn_lif" and i in (1, 2, 3):
            # dL/dz and the tdBN gradients: the one-pass backward sums dL/dy per neuron over time, then per
            # channel (as the previous release's fused LIF+tdBN backward kernel did); the composition sums per
            # element. Same mathematics, other rounding.
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert a.dtype == b.dtype and torch.equal(a, b), i


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("p", SURROGATES)
def test_bfloat16_units_compute_exactly_the_float32_unit_of_their_values(kind, layout, p):
    """A bfloat16 unit (autocast's conv output) is the float32 unit applied to the same values, rounded once:
    the kernels read bfloat16 directly (no float32 copy of z, of the spikes' gradient or of the input
    gradient), and the results are bit-identical to the float32 unit's on ``z.float()``."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    z, zb, g, bns = _unit_case(kind, layout, torch.bfloat16)
    before = native.calls["unit_forward"], native.calls["unit_backward"]
    low = _run_unit(kind, z, zb, g, p, copy.deepcopy(bns))
    assert (native.calls["unit_forward"], native.calls["unit_backward"]) == (before[0] + 1, before[1] + 1)
    assert low[0].dtype == low[1].dtype == torch.bfloat16
    wide = _run_unit(kind, z.float(), None if zb is None else zb.float(), g.float(), p, copy.deepcopy(bns))
    for i, (a, b) in enumerate(zip(low, wide)):
        b = b.to(a.dtype)  # spikes and input gradients: the float32 results rounded once
        assert torch.equal(a, b), (i, (a.float() - b.float()).abs().max())


def test_float16_units_on_the_cpu_say_that_they_take_the_float32_path():
    """float16 has no compiled unit kernel: the unit says so once and computes through float32 copies (the
    same results as the float32 unit on its values, rounded once)."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    from tdbn.operators import kernels as kernel_sets

    kernel_sets._warned.discard("float16-cpu")
    z, zb, g, bns = _unit_case("td_bn_lif", "contiguous", torch.float16)
    before = native.calls["unit_forward"]
    with pytest.warns(RuntimeWarning, match="float16 units compute through float32 copies"):
        low = _run_unit("td_bn_lif", z, None, g, LIFParameters(), copy.deepcopy(bns))
    assert native.calls["unit_forward"] == before  # the one-pass kernels did not run
    wide = _run_unit("td_bn_lif", z.float(), None, g.float(), LIFParameters(), copy.deepcopy(bns))
    assert low[0].dtype == torch.float16 and torch.equal(low[0].float(), wide[0])
    torch.testing.assert_close(low[1].float(), wide[1], rtol=1e-3, atol=1e-4)


def test_unit_kernels_reject_mismatched_operands():
    """The checks before C: a per-channel vector of the wrong length or dtype, or a second input laid out
    differently, raises KernelArgumentError instead of reaching the kernel."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    z = torch.randn(2, 2, 3, 4, 4, dtype=torch.bfloat16)
    ok = (torch.zeros(3), torch.ones(3), None)
    assert native.unit_forward(z, ok, None, None, 0.25, 0.5).dtype == torch.bfloat16
    with pytest.raises(native.KernelArgumentError, match="per-channel"):
        native.unit_forward(z, (torch.zeros(4), torch.ones(3), None), None, None, 0.25, 0.5)
    with pytest.raises(native.KernelArgumentError, match="does not match"):
        native.unit_forward(z, ok, z.float(), None, 0.25, 0.5)
    with pytest.raises(native.KernelArgumentError, match="layout"):
        native.unit_forward(z.transpose(3, 4), ok, None, None, 0.25, 0.5)
    with pytest.raises(native.KernelArgumentError, match="compute|float32"):
        native.bn_grad_input(z, z, *(torch.zeros(3),) * 4)  # the gradient must be float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bn_grad_input_in_place_equals_a_new_tensor(dtype, channels_last):
    """The tdBN input gradient written over dL/dy (what a unit's backward pass does with its last use of it)
    equals the one written into a new tensor, bit for bit; an ``out`` of another dtype is refused before C."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    z, g = (torch.randn(6, 5, 7, 3, dtype=dtype).contiguous(memory_format=fmt).view(2, 3, 5, 7, 3) for _ in "zg")
    vecs = [torch.randn(5, dtype=dtype) for _ in range(4)]
    fresh = native.bn_grad_input(g, z, *vecs)
    g_ptr = g.data_ptr()
    into = native.bn_grad_input(g, z, *vecs, out=g)
    assert into.data_ptr() == g_ptr and torch.equal(into, fresh)
    with pytest.raises(native.KernelArgumentError, match="does not match"):
        native.bn_grad_input(fresh, z, *vecs, out=torch.empty(z.shape, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_identity_junction_writes_its_input_gradient_into_the_read_back_spikes(monkeypatch, dtype, channels_last):
    """The junction with an identity shortcut kept as bits reads the spikes back into a temporary of its own;
    once the LIF backward pass has read them, dL/dza goes into that temporary instead of a fresh tensor. Same
    gradients bit for bit as with a fresh output."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    from tdbn.operators import unit_ops as units

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(3)
    za0 = torch.randn(12, 5, 6, 7, dtype=dtype).contiguous(memory_format=fmt).view(3, 4, 5, 6, 7)
    spikes = (torch.rand(12, 5, 6, 7) > 0.6).to(dtype).contiguous(memory_format=fmt).view(3, 4, 5, 6, 7)
    g = torch.randn(3, 4, 5, 6, 7, dtype=dtype)
    seen = []
    real_input_grad, real_bn_backward = native.bn_grad_input, units.bn_backward

    def recording(*args, out=None, **kw):
        seen.append(out)
        return real_input_grad(*args, out=out, **kw)

    def backward(offer_spare: bool):
        with monkeypatch.context() as m:
            m.setattr(native, "bn_grad_input", recording)
            if not offer_spare:  # the same call with nothing offered: dL/dza into a new tensor
                m.setattr(units, "bn_backward", lambda *args, into=None, **kw: real_bn_backward(*args, **kw))
            za = za0.clone().requires_grad_()
            s = spikes.clone().requires_grad_()
            bn = TdBatchNorm2d(5, alpha=2 ** -0.5).to(dtype)
            out = td_bn_add_lif(za, bn.unit_args(za), s, None, LIFParameters(), zb_mask=pack_spikes(s))
            out.backward(g)
        return za.grad, s.grad, bn.weight.grad, bn.bias.grad

    reused = backward(True)
    assert len(seen) == 1 and seen[0] is not None, "dL/dza went into a new tensor, not the read-back spikes"
    assert seen[0].dtype == dtype and seen[0].stride() == za0.stride()
    fresh = backward(False)
    assert len(seen) == 2 and seen[1] is None
    for a, b in zip(reused, fresh):
        assert torch.equal(a, b)


def test_junction_rejects_mismatched_branches():
    bn = TdBatchNorm1d(3)
    with pytest.raises(ValueError, match="one shape"):
        td_bn_add_lif(torch.randn(2, 2, 3), bn.unit_args(torch.randn(2, 2, 3)), torch.randn(2, 2, 4), None,
                      LIFParameters())
    with pytest.raises(ValueError, match="floating-point"):
        td_bn_lif(torch.ones(2, 2, 3, dtype=torch.int64), bn.unit_args(torch.randn(2, 2, 3)), LIFParameters())


@pytest.mark.parametrize("native_on", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.bool])
@pytest.mark.parametrize("n", [1, 8, 13, 4099])
def test_spike_bits_round_trip(native_on, dtype, n):
    """pack_spikes / unpack_spikes: compiled kernels and the torch reference give the same bytes and values."""
    from tdbn.operators.reference import pack_bits as _pack_reference
    from tdbn.operators.spike_ops import pack_spikes, unpack_spikes

    x = (torch.rand(n) > 0.5).to(dtype).view(-1, 1)
    with native.enabled(native_on):
        bits = pack_spikes(x)
        assert bits.dtype == torch.uint8 and bits.numel() == (n + 7) // 8
        assert torch.equal(bits, _pack_reference(x))
        for out in (torch.float32, torch.float64, torch.bfloat16):
            assert torch.equal(unpack_spikes(bits, (n, 1), out), x.to(out))
    x_cl = (torch.rand(2, 3, 4, 5) > 0.5).float().contiguous(memory_format=torch.channels_last)
    assert torch.equal(unpack_spikes(pack_spikes(x_cl), (2, 3, 4, 5), torch.float32), x_cl)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("conv", [
    dict(in_channels=6, out_channels=8, kernel_size=3, padding=1),
    dict(in_channels=6, out_channels=8, kernel_size=3, padding=1, stride=2, bias=True),
    dict(in_channels=6, out_channels=8, kernel_size=1, stride=2),
    dict(in_channels=6, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=2),
])
def test_spike_conv2d_equals_conv_autograd(dtype, channels_last, conv):
    """spike_conv2d (the input kept as bits, its gradient by the transposed convolution) gives autograd's conv
    output and input/weight/bias gradients bit for bit, in the gradient's memory format, odd sizes included.
    Grouped convs in channels-last: oneDNN sums in another order there (to rounding)."""
    from tdbn.operators.spike_ops import pack_spikes, spike_conv2d

    torch.manual_seed(0)
    layer = nn.Conv2d(**{"bias": False, **conv}).to(dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.rand(5, 6, 11, 9) > 0.7).to(dtype).contiguous(memory_format=fmt)
    out_ref = layer(x.clone().requires_grad_())
    g = torch.randn(out_ref.shape).to(dtype).contiguous(memory_format=fmt)
    xr, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = layer(xr)
    ref_grads = torch.autograd.grad(ref, [xr, *layer.parameters()], g)
    got = spike_conv2d(layer, xs, pack_spikes(xs.detach()))
    got_grads = torch.autograd.grad(got, [xs, *layer.parameters()], g)
    assert torch.equal(got, ref)
    for a, b in zip(got_grads, ref_grads):
        if channels_last and conv.get("groups", 1) > 1:
            torch.testing.assert_close(a, b)
        else:
            assert torch.equal(a, b)
    assert got_grads[0].stride() == ref_grads[0].stride()


def test_unpack_rejects_a_wrong_size():
    from tdbn.operators.spike_ops import unpack_spikes

    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    with pytest.raises(native.KernelArgumentError, match="do not hold"):
        unpack_spikes(torch.zeros(3, dtype=torch.uint8), (100,), torch.float32)


# ---- whole models ----------------------------------------------------------------------------------------


def _run(model: nn.Module, x: torch.Tensor, lean: bool):
    model = copy.deepcopy(model)
    with switches.lean_training(lean):
        out = model(x)
    ops = graph_ops(out)
    out.square().sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers()), ops


def _assert_same(a, b):
    assert torch.equal(a[0], b[0])
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], rtol=1e-10, atol=1e-12, msg=k)
    for k in a[2]:
        torch.testing.assert_close(a[2][k], b[2][k], rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.parametrize(
    "name, kw",
    [("resnet19", {}), ("resnet19", {"shortcut_norm": "projection"}), ("plain", {"depth": 6}),
     ("resnet17", {}), ("resnet19", {"surrogate": "sigmoid", "tau": 0.5}), ("resnet50", {})],
)
def test_models_lean_equals_plain(name, kw):
    torch.manual_seed(0)
    size = 64 if name == "resnet50" else 32
    model = tdbn.models.create(name, num_classes=5, width=0.0625, timesteps=3, **kw).double()
    x = torch.randn(3, 2, 2, 32, 32, dtype=F64) if name == "resnet17" else torch.randn(2, 3, size, size, dtype=F64)
    lean = _run(model, x, True)
    plain = _run(model, x, False)
    _assert_same(lean, plain)
    # sentinel: the units ran, and no LIF of the lean run stored u
    assert has_op(lean[3], "td_bn_lif_forward") and not has_op(lean[3], "lif_forward")
    assert has_op(lean[3], "td_bn_add_lif_forward") == (name != "plain")
    assert has_op(plain[3], "lif_forward") and not has_op(plain[3], "td_bn_lif_forward")


def test_activation_checkpointing_keeps_the_units():
    """Checkpointing (saved-tensor hooks) sees the units' saved tensors and recomputes them: same gradients, and
    the unit operator is what runs inside."""
    from torch.utils.checkpoint import checkpoint

    unit = _unit().double()
    x = torch.randn(3, 2, 2, 5, 5, dtype=F64, requires_grad=True)
    s = checkpoint(unit, x, use_reentrant=False)
    assert has_op(graph_ops(s), "td_bn_lif_forward")
    (g1,) = torch.autograd.grad(s.sum(), x)
    with switches.lean_training(False):
        (g2,) = torch.autograd.grad(unit(x).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


def test_spike_hooks_see_spikes_in_training_and_fuse_still_works():
    from tdbn.layers.units import spike_sources

    model = tdbn.models.create("resnet19", num_classes=4, width=0.0625, timesteps=2).double()
    seen = []
    sources = spike_sources(model)
    assert len(sources) == sum(isinstance(m, LIF) for m in model.modules())
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in sources]
    model(torch.randn(2, 3, 32, 32, dtype=F64)).sum().backward()
    for h in handles:
        h.remove()
    assert len(seen) == len(sources) and all(set(s.unique().tolist()) <= {0.0, 1.0} for s in seen)
    model.eval()
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(tdbn.fuse(model)(x), model(x), rtol=1e-9, atol=1e-9)


def test_eval_and_no_grad_take_the_module_path():
    unit = _unit()
    x = torch.randn(2, 2, 2, 4, 4, requires_grad=True)
    assert has_op(graph_ops(unit(x)), "td_bn_lif_forward")
    calls = []
    h = unit.lif.register_forward_hook(lambda m, i, o: calls.append(1))
    unit.eval()
    assert not has_op(graph_ops(unit(x)), "td_bn_lif_forward") and calls == [1]
    unit.train()
    with torch.no_grad():
        unit(x)
    assert calls == [1, 1]
    h.remove()
    bn = TdBatchNorm2d(3)
    y = td_batch_norm(torch.randn(2, 2, 3, 4, 4).bfloat16(), None, None, None, None, alpha=1.0, v_th=0.5,
                      training=True, momentum=0.1, eps=1e-5)
    assert type(y.grad_fn).__name__ != "TdBatchNormFunctionBackward"  # 16-bit floats: plain kernels
    assert type(bn(x.new_ones(2, 2, 3, 4, 4, requires_grad=True)).grad_fn).__name__ == "TdBatchNormFunctionBackward"


def test_compiled_kernels_ran_in_the_units():
    """Sentinel for the CPU implementation: a training step of a unit calls the compiled kernels' fused backward."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    before = dict(native.calls)
    _unit()(torch.randn(3, 2, 2, 5, 5)).sum().backward()
    assert native.calls["unit_forward"] == before.get("unit_forward", 0) + 1
    assert native.calls["unit_backward"] == before.get("unit_backward", 0) + 1
