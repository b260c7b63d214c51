"""Per-step cost of the training loop's fault checks, under DDP (gloo, 1 thread per process) and in 1 process.

A training step (forward, cross-entropy, backward, SGD with momentum; DistributedDataParallel when 2 processes)
runs with three kinds of fault checks, interleaved in rounds on the same model and batch:

- ``none``: no check at all (the floor);
- ``fused``: what ``tdbn.train.engine.train_one_epoch`` does: the running statistics copied into a preallocated
  snapshot (one ``_foreach_copy_``), then after the backward pass one reduction of five flags (input, loss,
  statistics, gradients, checkpoint wish; an L2 norm per tensor with ``_foreach_norm``) = one all-reduce, one host
  sync;
- ``previous``: the checks before this change: a fresh clone of every buffer, a reduction of three flags before
  the backward pass (isfinite per statistics tensor) and a second one of the total L2 gradient norm after it =
  two all-reduces, two host syncs.

On a shared machine whole-step times vary by far more than the checks cost, so the table gives, for rank 0, the
median step time of each kind and, separately, the median time spent in the check code itself per step (the
snapshot, the flags, the reductions and the host syncs, timed around those lines), which is the overhead.

    python bench/fault_checks.py                      # the default configurations, 1 and 2 processes
    python bench/fault_checks.py --configs 0.25,8,2 --rounds 3 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import machine, median, table  # noqa: E402

KINDS = ("none", "fused", "previous")
DEFAULT_CONFIGS = ("0.25,8,2", "0.25,32,2")  # width, input size, T (ResNet-19; batch 16 per process)


def _previous_checks(x, loss, stats, grads, ctx, all_true, *, after_backward: bool) -> None:
    import torch

    if not after_backward:
        flags = torch.stack([torch.isfinite(x).all(), torch.isfinite(loss.detach()),
                             torch.stack([torch.isfinite(t).all() for t in stats]).all()]).to(torch.float32)
        all_true(flags, ctx).tolist()
    else:
        norm = torch.nn.utils.get_total_norm(grads)
        all_true(torch.isfinite(norm).to(torch.float32).reshape(1), ctx).item()


def _run(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    import tdbn.train.engine as engine
    from tdbn import models
    from tdbn.train.distributed import setup, teardown

    torch.set_num_threads(1)
    ctx = setup("cpu")
    results = {}
    try:
        for config in args.configs:
            width, size, timesteps = config.split(",")
            torch.manual_seed(0)
            model = models.create("resnet19", num_classes=10, in_channels=3, input_size=int(size),
                                  width=float(width), timesteps=int(timesteps))
            net = DistributedDataParallel(model) if ctx.distributed else model
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(args.batch, 3, int(size), int(size))
            y = torch.randint(0, 10, (args.batch,))
            buffers = [t for _, t in engine._norm_buffers(model)]
            stats = [t for t in buffers if t.is_floating_point()]
            snapshot = [t.clone() for t in buffers]
            params = [p for p in model.parameters() if p.requires_grad]

            def step(kind: str) -> float:
                """One training step; returns the seconds spent in its fault checks."""
                t0 = time.perf_counter()
                if kind == "fused":
                    torch._foreach_copy_(snapshot, buffers)
                elif kind == "previous":
                    _ = [t.clone() for t in buffers]
                t1 = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                t2 = time.perf_counter()
                if kind == "previous":
                    _previous_checks(x, loss, stats, None, ctx, engine._all_true, after_backward=False)
                t3 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t4 = time.perf_counter()
                grads = [p.grad for p in params if p.grad is not None]
                if kind == "fused":
                    engine._check_step(model, torch.isfinite(x).all(), loss, stats, grads, False, ctx, epoch=1,
                                       iteration=1)
                elif kind == "previous":
                    _previous_checks(x, loss, stats, grads, ctx, engine._all_true, after_backward=True)
                t5 = time.perf_counter()
                opt.step()
                return (t1 - t0) + (t3 - t2) + (t5 - t4)

            for kind in KINDS:  # warm-up
                step(kind)
            times: dict[str, list[float]] = {k: [] for k in KINDS}
            checks: dict[str, list[float]] = {k: [] for k in KINDS}
            for r in range(args.rounds):
                for kind in KINDS[r % len(KINDS):] + KINDS[: r % len(KINDS)]:  # rotate the order
                    if ctx.distributed:
                        dist.barrier()
                    for _ in range(args.steps):
                        t0 = time.perf_counter()
                        checks[kind].append(step(kind))
                        times[kind].append(time.perf_counter() - t0)
            results[config] = {k: [median(times[k]), median(checks[k])] for k in KINDS}
        if ctx.is_main:
            Path(out).write_text(json.dumps(results))
    finally:
        teardown(ctx)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", type=lambda s: s.split(";"), default=list(DEFAULT_CONFIGS),
                   help="width,input size,T; several separated by ';'")
    p.add_argument("--processes", type=lambda s: [int(v) for v in s.split(",")], default=[2, 1])
    p.add_argument("--batch", type=int, default=16, help="per process")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per kind and round")
    args = p.parse_args()

    import torch.multiprocessing as mp

    print(machine())
    rows = []
    for world in args.processes:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "result.json")
            mp.spawn(_run, args=(world, _free_port(), args, out), nprocs=world, join=True)
            results = json.loads(Path(out).read_text())
        for config, r in results.items():
            base = r["none"][0]
            rows.append([config, world, f"{1e3 * base:.1f}",
                         *(f"{1e3 * r[k][0]:.1f}; checks {1e3 * r[k][1]:.2f} ({100 * r[k][1] / base:.1f} %)"
                           for k in KINDS[1:])])
    print(f"ResNet-19 (width,input,T), batch {args.batch} per process, {args.rounds} rounds x {args.steps} steps "
          "per kind; ms, medians over steps: step time; time in the checks (share of the step without checks)")
    print(table(["config", "processes", "no checks", "fused (1 all-reduce, 1 sync)",
                 "previous (2 all-reduces, 2 syncs)"], rows))


if __name__ == "__main__":
    main()
