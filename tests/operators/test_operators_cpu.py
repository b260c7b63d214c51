"""The compiled CPU kernels (tdbn.operators.cpu) against the ATen formulation they replace.

LIF: bit-identical forward and (rectangle surrogate) backward in float32/64 and bfloat16, any thread count,
contiguous and channels-last. tdBN: the same values and gradients up to float rounding. The LIF backward pass
fused with its tdBN input: the same gradients as the unfused path, and the tdBN's per-channel sums reused only
when the gradient reaching the tdBN is the LIF's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tdbn
from tdbn.functional import lif
from tdbn.operators import cpu as native
from tdbn.operators.cpu import bptt as _bptt
from tdbn.operators.recursions import bptt_reference as _bptt_aten
from tdbn.operators.cpu import integrate as _integrate
from tdbn.operators.recursions import integrate_reference as _integrate_aten
from tdbn.operators.recursions import lif_forward_reference
from tdbn.functional.surrogate import SURROGATES



def _threads(n: int):
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)

    return _Ctx()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("tau,v_th", [(0.0, 0.5), (0.25, 0.5), (0.9, 0.3), (0.3, 0.3)])
def test_lif_kernels_bit_identical_to_aten(dtype, T, tau, v_th):
    x = (torch.randn(T, 5, 3, 77) * 0.8 + 0.2).to(dtype)
    x[0, 0, 0, :4] = v_th  # exactly at threshold: no spike; inside the surrogate window
    assert native.usable(x)
    u1, s1, u2, s2, s3 = (torch.empty_like(x) for _ in range(5))
    _integrate(x, u1, tau, v_th, s1)
    _integrate_aten(x, u2, tau, v_th, s2)
    _integrate(x, None, tau, v_th, s3)  # spikes only, no membrane over time
    assert torch.equal(u1, u2) and torch.equal(s1, s2) and torch.equal(s3, s2)
    in_place = x.clone()
    _integrate(in_place, in_place, tau, v_th)  # u over x, as the recomputation does
    assert torch.equal(in_place, u2)
    g = torch.randn_like(x)
    for width in (1.0, 0.7):
        assert torch.equal(_bptt(g, u1, tau, v_th, width, "rectangle"), _bptt_aten(g, u1, tau, v_th, width, "rectangle"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_lif_backward_other_surrogates_agree(dtype, surrogate):
    x = torch.randn(6, 4, 500, dtype=dtype)
    _, u = lif_forward_reference(x, 0.5, 0.5)
    g = torch.randn_like(x)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_bptt(g, u, 0.5, 0.5, 0.8, surrogate), _bptt_aten(g, u, 0.5, 0.5, 0.8, surrogate), **tol)


def test_lif_threads_and_layouts_bit_identical():
    """Several threads (ranges of neurons) and channels-last give the very same spikes and gradients."""
    x = torch.randn(4, 8, 16, 24, 24) * 0.7 + 0.3  # 73,728 neurons per step: split across threads
    g = torch.randn_like(x)

    def run(inp, grad):
        inp = inp.detach().clone().requires_grad_(True)
        s, u = lif(inp, tau=0.5, return_membrane=True)
        (gx,) = torch.autograd.grad(s, inp, grad)
        return s, u, gx

    with _threads(1):
        ref = run(x, g)
    with _threads(2):
        two = run(x, g)
        cl = run(x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 8)), g)
    with native.enabled(False):
        aten = run(x, g)
    for a, b, c, d in zip(ref, two, cl, aten):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def _bn_run(z, bn, g, channels_last=False):
    z = z.detach().clone().requires_grad_(True)
    h = z
    if channels_last:
        h = z.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, z.shape[:2])
    y = bn(h)
    (gz, gw, gb) = torch.autograd.grad(y, (z, bn.weight, bn.bias), g)
    return y.detach(), gz, gw, gb


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_td_batch_norm_matches_aten(dtype, channels_last):
    torch.manual_seed(0)
    z = torch.randn(3, 6, 5, 7, 9, dtype=dtype) * 2 + 0.5
    g = torch.randn_like(z)
    bn_a, bn_b = (tdbn.TdBatchNorm2d(5, alpha=0.7, v_th=0.5).to(dtype) for _ in range(2))
    with torch.no_grad():
        for bn in (bn_a, bn_b):
            bn.weight.copy_(torch.linspace(0.5, 2, 5))
            bn.bias.copy_(torch.linspace(-0.3, 0.3, 5))
    assert native.bn_layout(z) is not None
    out_native = _bn_run(z, bn_a, g, channels_last)
    with native.enabled(False):
        out_aten = _bn_run(z, bn_b, g, channels_last)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for a, b in zip(out_native, out_aten):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(bn_a.running_mean, bn_b.running_mean, **tol)
    torch.testing.assert_close(bn_a.running_var, bn_b.running_var, **tol)


def test_td_batch_norm_1d_matches_aten():
    z = torch.randn(4, 16, 10, dtype=torch.float64)
    g = torch.randn_like(z)
    bn_a, bn_b = tdbn.TdBatchNorm1d(10).double(), tdbn.TdBatchNorm1d(10).double()
    out_native = _bn_run(z, bn_a, g)
    with native.enabled(False):
        out_aten = _bn_run(z, bn_b, g)
    for a, b in zip(out_native, out_aten):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _unit(dtype, channels_last, on, extra_consumer=False, T=4):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(dtype)
    bn = tdbn.TdBatchNorm2d(8).to(dtype)
    z = torch.randn(T, 5, 3, 6, 6, dtype=dtype, requires_grad=True)
    with native.enabled(on):
        x = z.flatten(0, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        zt = conv(x).unflatten(0, (T, 5))
        if extra_consumer:  # a second use of the tdBN output: no unit, the modules run one after the other
            y = bn(zt)
            s = lif(y, tau=0.5)
            loss = (s * torch.randn_like(s)).sum() + (y * torch.randn_like(y)).sum()
        else:  # the tdBN + LIF unit
            s = tdbn.TdBNLIF(bn, tdbn.LIF(tau=0.5))(zt)
            loss = (s * torch.randn_like(s)).sum()
        loss.backward()
    return z.grad, conv.weight.grad, bn.weight.grad, bn.bias.grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("extra_consumer", [False, True])
def test_fused_lif_td_batch_norm_backward_matches_unfused(channels_last, extra_consumer, monkeypatch):
    calls = []
    real = native.bn_grad_sums
    monkeypatch.setattr(native, "bn_grad_sums", lambda *a: calls.append(1) or real(*a))
    fused = _unit(torch.float64, channels_last, True, extra_consumer)
    # the unit's fused backward computes the sums in the LIF's pass; the modules' tdBN backward sums itself
    assert len(calls) == (1 if extra_consumer else 0)
    plain = _unit(torch.float64, channels_last, False, extra_consumer)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_fused_backward_float32_close_and_T1():
    for T in (1, 3):
        for a, b in zip(_unit(torch.float32, False, True, T=T), _unit(torch.float32, False, False, T=T)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resnet_step_native_equals_aten_in_float64():
    """A whole ResNet-19 training step: the compiled kernels give the ATen path's loss and gradients."""

    def step(on):
        torch.manual_seed(0)
        model = tdbn.models.create("resnet19", num_classes=10, width=0.125, timesteps=2).double()
        x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
        with native.enabled(on):
            loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
            loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    (l1, g1), (l2, g2) = step(True), step(False)
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_without_compiler_falls_back_with_one_warning(tmp_path):
    """No C compiler: one RuntimeWarning naming the fix, then the ATen loops with the same results."""
    code = textwrap.dedent(
        """
        import warnings, torch
        from tdbn.functional import lif
        from tdbn.operators import cpu as native
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            x = torch.randn(3, 2, 50)
            s = lif(x)
            lif(x)
        assert not native.available()
        msgs = [str(m.message) for m in w if issubclass(m.category, RuntimeWarning)]
        assert len(msgs) == 1 and "C compiler" in msgs[0] and "TDBN_NATIVE=0" in msgs[0], msgs
        with native.enabled(False):
            assert torch.equal(s, lif(x))
        print("unavailable" in native.status())
        """
    )
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "TDBN_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_turned_off_by_environment(tmp_path):
    code = "from tdbn.operators import cpu as native; print(native.available(), native.status().split()[0])"
    env = {**os.environ, "TDBN_NATIVE": "0", "TDBN_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "off"], out.stderr
    assert not any(tmp_path.iterdir())  # nothing compiled


@pytest.mark.parametrize("policy, threshold", [("PASSIVE", None), ("", None), ("PASSIVE", "1")])
def test_threads_are_woken_only_for_enough_work(policy, threshold):
    """With sleeping OpenMP threads (OMP_WAIT_POLICY=PASSIVE) a kernel starts a 2-thread region only from
    MIN_PARALLEL_WORK["passive"] elements, with spinning threads from MIN_PARALLEL_WORK["spin"];
    TDBN_MIN_PARALLEL_WORK overrides both. The regions are counted in C; results equal the 1-thread ones."""
    if not native.available():
        pytest.skip("no C compiler: the compiled kernels cannot be built here")
    code = textwrap.dedent(
        """
        import torch
        from tdbn.operators import cpu as native
        torch.set_num_threads(2)
        out = [native.min_parallel_work()]
        for numel in (4 * 8 * 16 * 256, 4 * 8 * 16 * 8192):  # 131K and 4.2M elements
            z = torch.randn(4, 8, 16, numel // (4 * 8 * 16))
            before = native.parallel_regions()
            stats = native.bn_stats(z)
            out.append(native.parallel_regions() - before)
            torch.set_num_threads(1)
            one = native.bn_stats(z)
            torch.set_num_threads(2)
            out.append(all(torch.equal(a, b) for a, b in zip(stats, one)) or "differs")
        print(*out)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TDBN_MIN_PARALLEL_WORK")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    if threshold:
        env["TDBN_MIN_PARALLEL_WORK"] = threshold
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    limit, small, small_eq, large, _ = out.stdout.split()
    expected = int(threshold) if threshold else native.MIN_PARALLEL_WORK["passive" if policy else "spin"]
    assert int(limit) == expected
    assert int(small) == (2 if 131072 >= expected else 0)  # bn_stats: two passes, one region each
    assert int(large) == 2
    if int(small) == 0:
        assert small_eq == "True"  # one thread's arithmetic, bit for bit


@pytest.mark.parametrize("store_u", [False, True])
def test_lif_forward_reads_an_input_repeated_over_time(store_u):
    """A static image's encoding expanded over T (stride 0 in time) runs the compiled forward kernel as it is."""
    base = torch.randn(1, 6, 4, 9, 9) * 0.6 + 0.2
    x = base.expand(5, -1, -1, -1, -1)
    spikes = torch.empty(x.shape)
    u = torch.empty(x.shape) if store_u else None
    assert native.usable_forward(x, u, spikes) and not native.usable(x, u, spikes)
    _integrate(x, u, 0.5, 0.5, spikes)
    ref_u, ref_s = torch.empty(x.shape), torch.empty(x.shape)
    _integrate_aten(x.contiguous(), ref_u, 0.5, 0.5, ref_s)
    assert torch.equal(spikes, ref_s)
    if store_u:
        assert torch.equal(u, ref_u)


def test_a_malformed_thread_threshold_names_the_variable(monkeypatch):
    monkeypatch.setenv("TDBN_MIN_PARALLEL_WORK", "half a million")
    with pytest.raises(ValueError, match="TDBN_MIN_PARALLEL_WORK='half a million' is not a whole number"):
        native.min_parallel_work()
    monkeypatch.setenv("TDBN_MIN_PARALLEL_WORK", " 65536 ")
    assert native.min_parallel_work() == 65536
