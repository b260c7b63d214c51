"""tdBN's successors (TEBN, BNTT, TAB, the MPBN neuron): each module against a plain transcription of its formula
(forward, running statistics and every gradient in float64), the lean units against their modules, two processes
against one, fusion where it folds and its refusals where it does not, streaming, and torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import tdbn
from tdbn import BNTT, MPBNLIF, TAB, TEBN, convert_sync_tdbn
from tdbn.fusion import FusionError
from tdbn.layers import TdBNLIF, TimeDistributed
from tdbn.operators import lean_training
from tdbn.stream import init_state, step

from formulas import RectangleSpike

F64 = torch.float64
EPS = 1e-5


def _perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Parameters away from their initial values (so that a wrong index or a missing factor shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 0.8 + (0.6 if name != "bias" else -0.4))
    return module


def _biased(x: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dims), x.var(dims, unbiased=False)


# --- the papers' formulas, read literally: x [T, N, C, H, W] -------------------------------------------------


def tebn_formula(x, gamma, beta, p):
    mean, var = _biased(x, (0, 1, 3, 4))
    c = (None, slice(None), None, None)
    y = torch.stack([p[t] * (gamma[c] * (x[t] - mean[c]) / torch.sqrt(var[c] + EPS) + beta[c])
                     for t in range(x.shape[0])])
    n = x.numel() / x.shape[2]
    return y, [(mean, var * n / (n - 1))]


def bntt_formula(x, gamma, beta):
    out, stats = [], []
    c = (None, slice(None), None, None)
    for t in range(x.shape[0]):
        mean, var = _biased(x[t], (0, 2, 3))
        out.append(gamma[t][c] * (x[t] - mean[c]) / torch.sqrt(var[c] + EPS) + beta[t][c])
        n = x[t].numel() / x.shape[2]
        stats.append((mean, var * n / (n - 1)))
    return torch.stack(out), stats


def tab_formula(x, gamma, beta, p):
    out, stats = [], []
    c = (None, slice(None), None, None)
    for t in range(x.shape[0]):
        window = x[: t + 1]  # steps 0..t
        mean, var = _biased(window, (0, 1, 3, 4))
        out.append(p[t] ** 2 * (gamma[t][c] * (x[t] - mean[c]) / torch.sqrt(var[c] + EPS) + beta[t][c]))
        n = window.numel() / x.shape[2]
        stats.append((mean, var * n / (n - 1)))
    return torch.stack(out), stats


def mpbn_formula(x, gamma, beta, *, tau, v_th, width=1.0):
    """u_t = tau u_{t-1} (1 - o_{t-1}) + x_t; o_t = H(BN_t(u_t) - v_th) with the batch statistics of u_t; the
    rectangular surrogate of width 1 in backward."""

    c = (None, slice(None), None, None)
    u = o = None
    spikes = []
    for t in range(x.shape[0]):
        u = x[t] if u is None else tau * u * (1 - o) + x[t]
        mean, var = _biased(u, (0, 2, 3))
        o = RectangleSpike.apply(gamma[c] * (u - mean[c]) / torch.sqrt(var[c] + EPS) + beta[c] - v_th, width)
        spikes.append(o)
    return torch.stack(spikes)


CASES = {
    "tebn": (lambda: TEBN(4, 3), lambda m, x: tebn_formula(x, m.weight, m.bias, m.p)),
    "bntt": (lambda: BNTT(4, 3), lambda m, x: bntt_formula(x, m.weight, m.bias)),
    "tab": (lambda: TAB(4, 3), lambda m, x: tab_formula(x, m.weight, m.bias, m.p)),
}


def _x(seed=0, T=3, N=5, C=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, N, C, 3, 3, generator=g, dtype=F64) * 1.5 + 0.3).requires_grad_(True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_norm_equals_its_formula_forward_gradients_and_running_statistics(name):
    make, formula = CASES[name]
    m = _perturb(make().double())
    x = _x()
    g = torch.randn_like(x)
    y = m(x)
    ref, stats = formula(m, x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    params = [x, *m.parameters()]
    ours = torch.autograd.grad((y * g).sum(), params)
    theirs = torch.autograd.grad((ref * g).sum(), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # running statistics: momentum 0.1 from (0, 1), the unbiased variance
    mean = torch.stack([s[0] for s in stats]).squeeze(0)
    var = torch.stack([s[1] for s in stats]).squeeze(0)
    torch.testing.assert_close(m.running_mean, 0.1 * mean.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * var.detach(), rtol=1e-12, atol=1e-14)
    assert int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_norm_in_eval_mode_applies_its_per_step_map(name):
    make, _ = CASES[name]
    m = _perturb(make().double())
    with torch.no_grad():
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = _x().detach()
    scale, shift = m.step_affine()
    expected = torch.stack([x[t] * scale[t].view(1, -1, 1, 1) + shift[t].view(1, -1, 1, 1) for t in range(3)])
    torch.testing.assert_close(m(x), expected, rtol=1e-13, atol=1e-13)


def test_mpbn_neuron_equals_its_formula_forward_and_gradients():
    lif = _perturb(MPBNLIF(4, tau=0.25, v_th=0.5).double())
    x = _x(1)
    g = torch.randn_like(x)
    s = lif(x)
    ref = mpbn_formula(x, lif.weight, lif.bias, tau=0.25, v_th=0.5)
    assert torch.equal(s, ref)
    assert 0.05 < s.mean() < 0.95  # both spikes and silence occur
    params = [x, lif.weight, lif.bias]
    for a, b in zip(torch.autograd.grad((s * g).sum(), params), torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert int(lif.num_batches_tracked) == 1
    assert not torch.equal(lif.running_var, torch.ones(4))  # updated once per step


def test_mpbn_reset_uses_the_potential_before_normalization():
    """A neuron that did not fire carries tau * u (not tau * u_hat): with beta shifting u_hat, only u's value makes
    the second step fire."""
    lif = MPBNLIF(1, tau=0.5, v_th=0.5).double().eval()
    with torch.no_grad():
        lif.bias.fill_(-1.0)  # u_hat = u - 1
    x = torch.tensor([[[1.2]], [[0.95]]], dtype=F64)  # u_0 = 1.2 (u_hat 0.2: silent); u_1 = 0.6 + 0.95 = 1.55
    assert lif(x).flatten().tolist() == [0.0, 1.0]  # carrying u_hat (0.2) would give u_1 = 1.05, u_hat 0.05: silent


# --- the lean units ----------------------------------------------------------------------------------------


def _model(norm: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2, input_size=16, norm=norm,
                              **kw).double()


@pytest.mark.parametrize("norm", ["tebn", "bntt", "tab", "mpbn"])
@pytest.mark.parametrize("shortcut_norm", ["all", "projection"])
def test_lean_network_equals_its_modules(norm, shortcut_norm):
    """Outputs, every gradient, running statistics and batch counts: recomputation in backward == the modules one
    after the other with autograd storing everything (float64)."""
    x = torch.rand(6, 3, 16, 16, dtype=F64)
    y = torch.randint(0, 10, (6,))
    runs = []
    for lean in (True, False):
        model = _model(norm, shortcut_norm=shortcut_norm)
        with lean_training(lean):
            for _ in range(2):
                model.zero_grad()
                out = model(x)
                torch.nn.functional.cross_entropy(out, y).backward()
        runs.append((out.detach(), [p.grad.clone() for p in model.parameters()], dict(model.named_buffers())))
    (o1, g1, b1), (o2, g2, b2) = runs
    torch.testing.assert_close(o1, o2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    for k in b1:
        torch.testing.assert_close(b1[k], b2[k], rtol=1e-12, atol=1e-12)
    assert all(int(v) == 2 for k, v in b1.items() if k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("make", [lambda: TEBN(4, 2), lambda: BNTT(4, 2), lambda: TAB(4, 2),
                                  lambda: tdbn.TdBatchNorm2d(4, alpha=1.0, v_th=1.0)])
def test_unit_stores_only_its_input(make):
    """A successor's unit keeps z for backward and nothing else of its size, like the tdBN unit; its modules keep more
    (counted in elements, so that the MPBN neuron's per-step tensors count too)."""
    lif = MPBNLIF(4) if isinstance(make(), tdbn.TdBatchNorm2d) else tdbn.LIF()
    unit = TdBNLIF(make(), lif)
    z = torch.randn(2, 8, 4, 10, 10, requires_grad=True)

    def big_saved(lean: bool) -> int:
        saved = []
        with lean_training(lean), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t,
                                                                           lambda t: t):
            unit(z)
        return sum(t.numel() for t in saved if t.data_ptr() != z.data_ptr()) / z.numel()

    assert big_saved(True) < 0.01  # z itself, its parameters and statistics
    assert big_saved(False) >= 1


def test_identity_shortcut_junction_stores_the_block_input_as_bits():
    block = _model("tebn").body.stage1[1]  # an identity-shortcut block
    x = (torch.rand(2, 3, 8, 16, 16, dtype=F64) > 0.5).to(F64).requires_grad_(True)  # [T, N, C, H, W] spikes
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        block(x)
    assert not any(t.dtype == F64 and t.shape == x.shape and t.data_ptr() == x.data_ptr() for t in saved)
    assert any(t.dtype == torch.uint8 and t.numel() == (x.numel() + 7) // 8 for t in saved)


# --- two processes == one ----------------------------------------------------------------------------------

SYNC_MODULES = {"tebn": lambda: TEBN(4, 3), "bntt": lambda: BNTT(4, 3), "tab": lambda: TAB(4, 3),
                "mpbn": lambda: MPBNLIF(4),
                # the lean units: one autograd node (TAB + LIF) and recomputation (BN + MPBN neuron)
                "tab_unit": lambda: TdBNLIF(TAB(4, 3), tdbn.LIF()),
                "mpbn_unit": lambda: TdBNLIF(tdbn.TdBatchNorm2d(4, alpha=1.0, v_th=1.0), MPBNLIF(4))}


def _norm_of(m: torch.nn.Module) -> torch.nn.Module:
    return m.bn if isinstance(m, TdBNLIF) else m


def _sync_case():
    x = _x(2, N=8).detach()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    return x, g, {k: _perturb(make().double()) for k, make in SYNC_MODULES.items()}


def _sync_worker(rank: int, world: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    x, g, modules = _sync_case()
    half = x.shape[1] // world
    part = slice(rank * half, (rank + 1) * half)
    result = {}
    for name, m in modules.items():
        convert_sync_tdbn(m)
        xs = x[:, part].clone().requires_grad_(True)
        y = m(xs)
        (y * g[:, part]).sum().backward()
        result[name] = {"y": y.detach(), "gx": xs.grad, "grads": [p.grad for p in m.parameters()],
                        "rm": _norm_of(m).running_mean, "rv": _norm_of(m).running_var}
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    mp.spawn(_sync_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    x, g, modules = _sync_case()
    for name, m in modules.items():
        xs = x.clone().requires_grad_(True)
        y = m(xs)
        (y * g).sum().backward()
        a, b = r[0][name], r[1][name]
        close = dict(rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(torch.cat([a["y"], b["y"]], dim=1), y.detach(), **close)
        torch.testing.assert_close(torch.cat([a["gx"], b["gx"]], dim=1), xs.grad, **close)
        for ga, gb, p in zip(a["grads"], b["grads"], m.parameters()):
            torch.testing.assert_close(ga + gb, p.grad, **close)  # DDP sums (averages) the local parts
        for k, ref in (("rm", _norm_of(m).running_mean), ("rv", _norm_of(m).running_var)):
            torch.testing.assert_close(a[k], ref, **close)
            torch.testing.assert_close(b[k], ref, **close)


# --- deployment ----------------------------------------------------------------------------------------------


def _trained_stats(model: torch.nn.Module) -> torch.nn.Module:
    x = torch.rand(8, 3, 16, 16, dtype=F64)
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


def test_mpbn_network_fuses_to_plain_lif_and_equals_the_unfused_one():
    model = _model("mpbn")
    _trained_stats(model)
    with torch.no_grad():  # thresholds theta = mean + sd (v_th - beta) / gamma all positive
        for m in model.modules():
            if isinstance(m, MPBNLIF):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(0.0, 0.5)
    fused = tdbn.fuse(model)
    assert tdbn.export.count_norm_layers(fused) == 0
    assert not any(isinstance(m, MPBNLIF) for m in fused.modules())
    assert sum(type(m) is tdbn.LIF for m in fused.modules()) == sum(isinstance(m, MPBNLIF) for m in model.modules())
    x = torch.rand(4, 3, 16, 16, dtype=F64)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


def test_mpbn_fusion_refuses_a_threshold_no_positive_scale_gives():
    model = _trained_stats(_model("mpbn"))
    with torch.no_grad():
        model.encoder.lif.weight[0] = -1.0
    with pytest.raises(FusionError, match=r"encoder\.lif has 1 channel\(s\).*gamma <= 0.*tdbn eval"):
        tdbn.fuse(model)


def test_mpbn_fusion_refuses_an_identity_shortcut_without_norm():
    model = _trained_stats(_model("mpbn", shortcut_norm="projection"))
    with pytest.raises(FusionError, match="identity shortcut without norm"):
        tdbn.fuse(model)


@pytest.mark.parametrize("norm", ["tebn", "bntt", "tab"])
def test_per_step_norms_fold_only_where_every_step_has_the_same_map(norm):
    model = _model(norm).eval()  # as built: every step's map is the same (p = 1, equal statistics and affine)
    x = torch.rand(3, 3, 16, 16, dtype=F64)
    fused = tdbn.fuse(model)
    assert tdbn.export.count_norm_layers(fused) == 0
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        model.encoder.bn.weight.mul_(torch.linspace(0.5, 1.5, model.encoder.bn.weight.numel(),
                                                    dtype=F64).view_as(model.encoder.bn.weight))
        if hasattr(model.encoder.bn, "p"):
            model.encoder.bn.p[1] = 0.5
        else:
            model.encoder.bn.running_var[1] *= 2
    with pytest.raises(FusionError, match=rf"encoder\.bn \({norm.upper()}\) leaves a different affine map at each "
                                          r"time step.*no static network"):
        tdbn.fuse(model)


# --- streaming and compile ----------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["tebn", "bntt", "tab", "mpbn"])
def test_stream_equals_the_multi_step_forward(norm):
    model = _model(norm).float()
    x = torch.rand(8, 3, 16, 16)
    for _ in range(2):  # statistics and parameters away from their initial values
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    model.eval()
    frames = torch.rand(2, 3, 3, 16, 16)  # [T, N, C, H, W]
    state = init_state(model, batch_size=3)
    for t in range(2):
        scores, state = step(model, frames[t], state)
    with torch.no_grad():
        assert torch.equal(scores, model(frames))


def test_stream_after_T_steps_keeps_the_last_steps_map():
    bn = _perturb(BNTT(4, 2))
    bn.eval()
    frame = torch.randn(1, 3, 4, 5, 5)  # one step [1, N, C, H, W]
    from tdbn.layers.stepping import stepping
    from tdbn.stream.layer_steps import OneStep
    outs = []
    for s in range(4):
        with stepping(OneStep({}, None, samples=6, row=0, step=s)):
            outs.append(bn(frame))
    scale, shift = bn.step_affine()
    assert not torch.equal(outs[0], outs[1])
    assert torch.equal(outs[1], outs[2]) and torch.equal(outs[1], outs[3])
    torch.testing.assert_close(outs[3], frame * scale[1].view(1, 1, -1, 1, 1) + shift[1].view(1, 1, -1, 1, 1))


@pytest.mark.parametrize("make", [lambda: (TEBN(4, 2), tdbn.LIF()), lambda: (tdbn.TdBatchNorm2d(4), MPBNLIF(4))])
def test_compiled_unit_equals_eager(make):
    torch.manual_seed(0)
    conv = TimeDistributed(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False))
    norm, lif = make()
    unit = TdBNLIF(conv, norm, lif).double()
    x = torch.rand(2, 4, 3, 6, 6, dtype=F64)
    eager = unit(x)
    (ge,) = torch.autograd.grad(eager.sum() + (eager * x[:, :, :1]).sum(), [conv.module.weight])
    compiled = torch.compile(unit, backend="aot_eager")(x)
    (gc,) = torch.autograd.grad(compiled.sum() + (compiled * x[:, :, :1]).sum(), [conv.module.weight])
    assert torch.equal(eager, compiled)
    torch.testing.assert_close(ge, gc, rtol=1e-10, atol=1e-12)


def test_unknown_norm_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown norm 'tebn2'.*'tebn', 'bntt', 'tab', 'mpbn'"):
        tdbn.models.create("resnet19", num_classes=10, norm="tebn2")


def test_per_step_norm_refuses_another_number_of_steps():
    with pytest.raises(ValueError, match=r"built for T = 3 steps.*timesteps=2"):
        TEBN(4, 3)(torch.randn(2, 5, 4, 3, 3))


# --- normalizations as data ----------------------------------------------------------------------------------


class _StepTEBN(tdbn.layers.temporal_norm._TimeNorm):
    """A normalization none of the papers has: BNTT's per-step statistics with TEBN's channel affine and step weight,
    made of its spec alone."""

    spec = tdbn.layers.temporal_norm.NormSpec("step_tebn", statistics="step", step_weight="p")


def step_tebn_formula(x, gamma, beta, p):
    out, stats = [], []
    c = (None, slice(None), None, None)
    for t in range(x.shape[0]):
        mean, var = _biased(x[t], (0, 2, 3))
        out.append(p[t] * (gamma[c] * (x[t] - mean[c]) / torch.sqrt(var[c] + EPS) + beta[c]))
        n = x[t].numel() / x.shape[2]
        stats.append((mean, var * n / (n - 1)))
    return torch.stack(out), stats


def test_a_new_normalization_is_its_spec():
    """A spec nobody wrote code for: parameters of the right shapes, the formula forward and backward (float64),
    per-step running statistics, and its lean unit equal to its modules."""
    m = _perturb(_StepTEBN(4, 3).double())
    assert m.weight.shape == (4,) and m.p.shape == (3,) and m.running_mean.shape == (3, 4)
    x = _x()
    y = m(x)
    ref, stats = step_tebn_formula(x, m.weight, m.bias, m.p)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(x)
    params = [x, *m.parameters()]
    for a, b in zip(torch.autograd.grad((y * g).sum(), params), torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.running_mean, 0.1 * torch.stack([s[0] for s in stats]).detach())
    runs = []
    for lean in (True, False):
        unit = TdBNLIF(_perturb(_StepTEBN(4, 3).double()), tdbn.LIF())
        xs = x.detach().clone().requires_grad_(True)
        with lean_training(lean):
            out = unit(xs)
            (out * g).sum().backward()
        runs.append((out, xs.grad, [p.grad for p in unit.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip([runs[0][1], *runs[0][2]], [runs[1][1], *runs[1][2]]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_norm_specs_name_every_model_norm_and_refuse_unknown_fields():
    from tdbn.layers.temporal_norm import NORM_SPECS, NormSpec
    from tdbn.models.options import NORMS

    assert set(NORM_SPECS) | {"mpbn", "none"} == set(NORMS)
    assert [NORM_SPECS[n].per_step for n in ("tdbn", "bn", "tebn", "bntt", "tab")] == [False, False, True, True, True]
    with pytest.raises(ValueError, match="statistics must be one of"):
        NormSpec("x", statistics="window")


def test_mpbn_units_train_as_one_node(monkeypatch):
    """The BN + MPBN units and junctions of a network train as one autograd node each (no recomputation), and
    store no tensor of a unit's size but their inputs."""
    import tdbn.layers.recompute as recompute

    def refuse(*args, **kwargs):
        raise AssertionError("an MPBN unit ran under recomputation")

    monkeypatch.setattr(recompute._Recompute, "apply", refuse)
    model = _model("mpbn")
    x = torch.rand(4, 3, 16, 16, dtype=F64)
    torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (4,))).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_step_sums_operators_equal_their_sums_on_the_kernels_and_the_reference(dtype):
    """``tdbn::step_sums`` and ``tdbn::step_grad_sums`` against float64 sums of the same values, through the C
    kernels (one call per step, counted) and through the reference."""
    from tdbn.operators import cpu, use_reference
    from tdbn.operators.step_stats import step_grad_sums, step_sums

    g_ = torch.Generator().manual_seed(0)
    z = (torch.randn(3, 4, 5, 6, 7, generator=g_) * 2 + 0.5).to(dtype)
    g = torch.randn(3, 4, 5, 6, 7, generator=g_).to(torch.float64 if dtype == torch.float64 else torch.float32)
    z64, g64 = z.double(), g.double()
    want_sums = torch.stack([z64.sum((1, 3, 4)), z64.square().sum((1, 3, 4))])
    want_grads = torch.stack([(g64 * z64).sum((1, 3, 4)), g64.sum((1, 3, 4))])
    tol = dict(rtol=1e-12, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-3)
    before = dict(cpu.calls)
    got = step_sums(z), step_grad_sums(g, z)
    if cpu.available():
        assert cpu.calls["bn_sums"] - before.get("bn_sums", 0) == 3  # one kernel call per step
        assert cpu.calls["bn_grad_sums"] - before.get("bn_grad_sums", 0) == 3
    with use_reference():
        ref = step_sums(z), step_grad_sums(g, z)
    for a, b, want in zip(got, ref, (want_sums, want_grads)):
        assert a.dtype == b.dtype == torch.float64 and a.shape == (2, 3, 5)
        torch.testing.assert_close(a, want, **tol)
        torch.testing.assert_close(b, want, **tol)


@pytest.mark.parametrize("amp", [False, True])
def test_lean_units_take_their_per_step_sums_from_the_kernels(amp):
    """A successor's unit in training, fp32 and bf16 autocast: its forward's sums and its backward's affine sums run
    on the C kernels (counted); under the reference, none does."""
    from tdbn.operators import cpu, use_reference

    if not cpu.available():
        pytest.skip("no C compiler: the C kernels cannot be built here")
    x = torch.rand(4, 3, 16, 16)
    y = torch.randint(0, 10, (4,))
    for reference in (False, True):
        torch.manual_seed(0)
        model = tdbn.models.create("resnet19", num_classes=10, width=1 / 16, timesteps=2, input_size=16, norm="tebn")
        before = dict(cpu.calls)
        with use_reference(reference):  # forward and backward
            with torch.autocast("cpu", torch.bfloat16, enabled=amp):
                out = model(x)
            torch.nn.functional.cross_entropy(out.float(), y).backward()
        used = {k: cpu.calls[k] - before.get(k, 0) for k in ("bn_sums", "bn_grad_sums")}
        if reference:
            assert used == {"bn_sums": 0, "bn_grad_sums": 0}
        else:  # every TEBN of the network, every step (T = 2): 19 norms, at least one call per step each
            assert used["bn_sums"] >= 2 * 19 and used["bn_grad_sums"] >= 2 * 19, used
        assert torch.isfinite(out).all() and all(p.grad is not None for p in model.parameters())
    # the values: the operators' own test above (the two paths round their sums differently, so a potential at a
    # threshold may fire in one and not the other: no comparison of whole networks here)
