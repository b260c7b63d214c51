"""Synchronized statistics inside the units: 2 gloo processes with half the batch each == 1 process with the whole
batch, for the three units (conv output -> tdBN -> LIF, the junction with a tdBN shortcut, the junction with an
identity shortcut of spikes), through the compiled CPU kernels and through the plain-PyTorch reference."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tdbn import LIF, LIFParameters, TdBatchNorm2d, TdBNLIF, convert_sync_tdbn
from tdbn.operators import cpu as native
from tdbn.operators import pack_spikes, td_bn_add_lif

KINDS = ("unit", "junction_tdbn", "junction_identity")
P = LIFParameters()


def _inputs(kind: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(7)
    shape = (3, 8, 4, 5, 5)  # [T, N, C, H, W]
    za = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
    zb = (torch.randn(shape, generator=g, dtype=torch.float64) - 0.2).to(dtype)
    if kind == "junction_identity":
        zb = (torch.rand(shape, generator=g, dtype=torch.float64) < 0.3).to(dtype)  # spikes
    grad = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return za, zb, grad


def _norms(dtype: torch.dtype):
    norms = []
    for alpha in (0.7, 0.5):
        bn = TdBatchNorm2d(4, alpha=alpha, v_th=P.v_th).to(dtype)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(int(alpha * 10)))
            bn.bias.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(int(alpha * 100)))
        norms.append(bn)
    return norms


def _run(kind: str, dtype: torch.dtype, part: slice, sync: bool) -> dict:
    """Forward and backward of one unit on the batch samples ``part``: outputs, gradients, running statistics."""
    za, zb, grad = (t[:, part].clone() for t in _inputs(kind, dtype))
    za.requires_grad_(True)
    zb.requires_grad_(True)
    bn_a, bn_b = _norms(dtype)
    if sync:
        convert_sync_tdbn(bn_a), convert_sync_tdbn(bn_b)
    if kind == "unit":
        out = TdBNLIF(bn_a, LIF())(za)
    elif kind == "junction_tdbn":
        out = td_bn_add_lif(za, bn_a.unit_args(za), zb, bn_b.unit_args(zb), P)
    else:
        out = td_bn_add_lif(za, bn_a.unit_args(za), zb, None, P, zb_mask=pack_spikes(zb))
    (out * grad).sum().backward()
    res = {"out": out.detach(), "gza": za.grad, "rm_a": bn_a.running_mean, "rv_a": bn_a.running_var,
           "gw_a": bn_a.weight.grad, "gb_a": bn_a.bias.grad}
    if kind != "unit":
        res["gzb"] = zb.grad
    if kind == "junction_tdbn":
        res.update(rm_b=bn_b.running_mean, rv_b=bn_b.running_var, gw_b=bn_b.weight.grad, gb_b=bn_b.bias.grad)
    return res


CASES = [(kind, dtype, compiled) for kind in KINDS for dtype in (torch.float64, torch.float32)
         for compiled in (True, False)] + [(kind, torch.bfloat16, True) for kind in KINDS]  # autocast's storage


def _worker(rank: int, world: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    half = 8 // world
    part = slice(rank * half, (rank + 1) * half)
    results = {}
    for kind, dtype, compiled in CASES:
        before = native.calls.copy()
        with native.enabled(compiled):
            res = _run(kind, dtype, part, sync=True)
        # proof of the path: the units' one-pass kernels ran with the sums for the all-reduce (not the modules)
        res["unit_kernels"] = torch.tensor([native.calls["unit_forward"] - before["unit_forward"],
                                            native.calls["unit_backward"] - before["unit_backward"],
                                            native.calls["bn_sums"] - before["bn_sums"]])
        results[f"{kind}-{dtype}-{compiled}"] = res
    results["compiled-unit"] = _compiled_unit(part)
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _compiled_unit(part: slice) -> dict:
    """The synchronized unit under ``torch.compile(fullgraph=True)``: the operators (with their all-reduces) are
    single nodes of the graph; output and gradients those of the eager unit."""
    za, _, grad = (t[:, part].clone() for t in _inputs("unit", torch.float64))
    res = {}
    for name, wrap in (("eager", lambda m: m), ("compiled", lambda m: torch.compile(m, fullgraph=True))):
        z = za.clone().requires_grad_(True)
        bn = convert_sync_tdbn(_norms(torch.float64)[0])
        out = wrap(TdBNLIF(bn, LIF()))(z)
        (out * grad).sum().backward()
        res[name] = [out.detach(), z.grad, bn.weight.grad, bn.running_var]
    return res


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_units")
    mp.spawn(_worker, args=(2, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{i}.pt", weights_only=True) for i in range(2)]


@pytest.mark.parametrize("kind,dtype,compiled", CASES, ids=[f"{k}-{str(d)[6:]}-{'c' if c else 'ref'}"
                                                            for k, d, c in CASES])
def test_sync_units_equal_one_process_on_the_whole_batch(two_processes, kind, dtype, compiled):
    with native.enabled(compiled):
        ref = _run(kind, dtype, slice(0, 8), sync=False)
    r0, r1 = (r[f"{kind}-{dtype}-{compiled}"] for r in two_processes)
    tol = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5),
           torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}[dtype]
    for key in ref:
        if key in ("out", "gza", "gzb"):  # per sample: the two halves side by side
            got = torch.cat([r0[key], r1[key]], dim=1)
        elif key.startswith("g"):  # parameter gradients: each process its batch's share (DDP averages them)
            got = r0[key] + r1[key]
        else:  # running statistics: the same on every process, those of the whole batch
            torch.testing.assert_close(r1[key], r0[key], rtol=0, atol=0, msg=key)
            got = r0[key]
        if key == "out" and dtype != torch.float64:  # a spike may flip where u rounds across the threshold
            assert (got != ref[key]).float().mean() < 1e-3, key
            continue
        torch.testing.assert_close(got, ref[key], **tol, msg=key)
    calls = r0["unit_kernels"].tolist()
    if compiled:
        assert calls[0] == 1 and calls[1] == 1 and calls[2] >= 1, calls
    else:
        assert calls == [0, 0, 0], calls


def test_sync_unit_under_torch_compile_fullgraph(two_processes):
    for r in two_processes:
        for eager, compiled in zip(r["compiled-unit"]["eager"], r["compiled-unit"]["compiled"], strict=True):
            torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)


def test_group_name_empty_without_a_process_group():
    bn = convert_sync_tdbn(TdBatchNorm2d(3))
    assert bn.sync and bn.group_name() == ""
    z = torch.randn(2, 4, 3, 2, 2, requires_grad=True)
    assert bn.unit_args(z).group == ""
