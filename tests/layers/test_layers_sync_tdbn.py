"""Synchronized tdBN statistics: 2 gloo processes with half the batch each == 1 process with the whole batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tdbn import TdBatchNorm2d, convert_sync_tdbn


def _make():
    torch.manual_seed(1)
    x = torch.randn(3, 8, 4, 5, 5, dtype=torch.float64) * 2 + 0.5  # [T, N, C, H, W]
    g = torch.randn_like(x)
    bn = TdBatchNorm2d(4, alpha=0.7, v_th=0.5).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return x, g, bn


def _worker(rank: int, world: int, out: str) -> None:
    # file rendezvous: no port to race for
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    x, g, bn = _make()
    bn = convert_sync_tdbn(bn)
    half = x.shape[1] // world
    xs = x[:, rank * half:(rank + 1) * half].clone().requires_grad_(True)
    y = bn(xs)
    (y * g[:, rank * half:(rank + 1) * half]).sum().backward()
    torch.save(
        {"y": y.detach(), "gx": xs.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
         "rm": bn.running_mean, "rv": bn.running_var},
        f"{out}/rank{rank}.pt",
    )
    dist.barrier()  # no rank tears gloo down while the other still talks to it (an abort otherwise)
    dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]

    x, g, bn = _make()
    x.requires_grad_(True)
    y = bn(x)
    (y * g).sum().backward()

    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]], dim=1), y.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat([r[0]["gx"], r[1]["gx"]], dim=1), x.grad, rtol=1e-10, atol=1e-10)
    # parameter gradients: each process holds its local part; DDP averages them, so the sum equals the full one
    torch.testing.assert_close(r[0]["gw"] + r[1]["gw"], bn.weight.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(r[0]["gb"] + r[1]["gb"], bn.bias.grad, rtol=1e-10, atol=1e-10)
    for k, ref in (("rm", bn.running_mean), ("rv", bn.running_var)):
        torch.testing.assert_close(r[0][k], ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(r[1][k], ref, rtol=1e-10, atol=1e-10)


def test_convert_keeps_alpha_and_vth():
    net = torch.nn.Sequential(TdBatchNorm2d(3, alpha=0.5, v_th=0.25))
    convert_sync_tdbn(net)
    assert net[0].sync and net[0].alpha == 0.5 and net[0].v_th == 0.25
    # without an initialized process group it behaves exactly as the unsynchronized layer
    x = torch.randn(2, 4, 3, 2, 2)
    ref = TdBatchNorm2d(3, alpha=0.5, v_th=0.25)
    assert torch.equal(net(x), ref(x))
