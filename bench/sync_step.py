"""Synchronized tdBN under data parallelism: the training step of ResNet-19 in 2 processes (gloo, DDP) with the
tdBN statistics synchronized across them (``convert_sync_tdbn``, the default under torchrun) against the same
step with process-local statistics, and against 1 process with 2 threads on the whole batch (scaling).

Each cell runs in fresh processes: ``--warmup`` steps, then ``--steps`` measured steps. Columns: median step
time, the whole-process peak RSS above the baseline (nothing reset after warm-up), and the live-tensor peak (a
second run with glibc's mmap threshold at 1 MiB, where RSS follows the live tensors; peak over the measured steps).
Per process, the largest of the ranks.

    python bench/sync_step.py                                  # width 1/4 and 1, fp32 and bf16
    python bench/sync_step.py --widths 0.25 --amps none --steps 3 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import machine, median, release_memory, reset_peak, rss_mb, peak_mb, table  # noqa: E402

MODES = ("local", "sync", "one-process")


def _step_fn(model, run, opt, x, y, amp: str):
    import torch
    from torch import nn

    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp == "bf16" else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if ctx is None:
            loss = nn.functional.cross_entropy(run(x), y)
        else:
            with ctx():
                loss = nn.functional.cross_entropy(run(x), y)
        loss.backward()
        opt.step()

    return step


def _worker(rank: int, world: int, cfg: dict) -> None:
    import torch
    import torch.distributed as dist

    import tdbn

    torch.set_num_threads(cfg["threads"])
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{cfg['dir']}/rendezvous", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = tdbn.models.create("resnet19", num_classes=10, width=cfg["width"], timesteps=cfg["T"])
    if cfg["mode"] == "sync":
        tdbn.convert_sync_tdbn(model)
    run = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(cfg["batch"], 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (cfg["batch"],), generator=g)
    model.train()
    step = _step_fn(model, run, opt, x, y, cfg["amp"])
    release_memory()
    base = rss_mb()
    for _ in range(cfg["warmup"]):
        step()
    whole = peak_mb()
    release_memory()
    reset_peak()
    times = []
    for _ in range(cfg["steps"]):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = peak_mb()
    res = {"time_s": median(times), "peak_mb": peak - base, "whole_peak_mb": max(whole, peak) - base}
    with open(f"{cfg['dir']}/rank{rank}.json", "w") as f:
        json.dump(res, f)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def measure(width: float, amp: str, mode: str, args, *, live: bool) -> dict:
    """One cell: ``mode`` local/sync (2 processes x 1 thread, ``batch`` each) or one-process (1 process x 2
    threads, ``2 * batch``). The largest reading over the ranks."""
    import torch.multiprocessing as mp

    world, threads, batch = (1, 2, 2 * args.batch) if mode == "one-process" else (2, 1, args.batch)
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if live:  # read by glibc when the spawned interpreters start
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1024 * 1024)
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = dict(dir=d, width=width, T=args.T, batch=batch, amp=amp, mode=mode, threads=threads,
                       warmup=args.warmup, steps=args.steps)
            mp.spawn(_worker, args=(world, cfg), nprocs=world, join=True)
            ranks = [json.loads(Path(d, f"rank{r}.json").read_text()) for r in range(world)]
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old
    return {k: max(r[k] for r in ranks) for k in ranks[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="0.25,1", help="comma-separated width multipliers")
    p.add_argument("--amps", default="none,bf16", help="comma-separated: none (fp32), bf16 (CPU autocast)")
    p.add_argument("--batch", type=int, default=16, help="images per process")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the cells here")
    args = p.parse_args(argv)
    print(machine())
    print(f"ResNet-19, T={args.T}, {args.batch} images per process (one-process: {2 * args.batch} images, 2 threads)")
    rows, cells = [], []
    for width in (float(w) for w in args.widths.split(",")):
        for amp in args.amps.split(","):
            got = {}
            for mode in MODES:
                r = measure(width, amp, mode, args, live=False)
                r["live_mb"] = measure(width, amp, mode, args, live=True)["peak_mb"]
                got[mode] = r
                cells.append({"width": width, "amp": amp, "mode": mode, **r})
                print(f"  width {width:g} {amp} {mode}: {r['time_s']:.3f} s, live {r['live_mb']:.0f} MB, "
                      f"whole peak {r['whole_peak_mb']:.0f} MB", flush=True)
            loc, syn, one = got["local"], got["sync"], got["one-process"]
            rows.append([f"{width:g}", "fp32" if amp == "none" else amp,
                         f"{loc['time_s']:.3f}", f"{syn['time_s']:.3f}", f"{syn['time_s'] / loc['time_s']:.2f}x",
                         f"{loc['live_mb']:.0f}", f"{syn['live_mb']:.0f}", f"{syn['live_mb'] / loc['live_mb']:.2f}x",
                         f"{loc['whole_peak_mb']:.0f}", f"{syn['whole_peak_mb']:.0f}",
                         f"{one['time_s']:.3f}", f"{syn['time_s'] / one['time_s']:.2f}x"])
    print(table(["width", "dtype", "local s/step", "sync s/step", "sync/local time", "local live MB",
                 "sync live MB", "sync/local live", "local whole peak MB", "sync whole peak MB",
                 "1 proc x 2 thr s/step", "sync 2x1 / 1x2 time"], rows))
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
