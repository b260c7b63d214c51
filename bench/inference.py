"""Inference benchmark of ResNet-19: tdbn unfused vs BN-scale-fused (``tdbn.fuse``, Eq. 9-10) vs the ANN floor.

Eval mode under ``torch.inference_mode()``, random CIFAR-sized images, median time of one forward pass of a
batch. The ANN floor is the same network with ReLU and its batch norms folded into the convs (what BN-scale
fusion does for the SNN), on the merged ``T*N`` batch. Each implementation runs in a fresh process; ``--rounds``
repeats the sweep, interleaved, and keeps medians.

    python bench/inference.py
    python bench/inference.py --configs 0.25,32,4 --reps 5 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import emit, machine, median, run_worker, table  # noqa: E402

IMPLS = ("tdbn", "tdbn-fused", "floor")
DEFAULT_CONFIGS = ("1,8,4", "0.25,32,4")


def _floor_folded(width: float, T: int):
    """The ANN floor with every BatchNorm replaced by the identity and a bias on the preceding layer: the cost of
    the network once its batch norms are folded (the values are irrelevant to the timing)."""
    from torch import nn

    from _nets import build_floor

    model, forward = build_floor(width, T)
    for mod in model.modules():
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(mod, name, nn.Identity())
            elif isinstance(child, nn.Conv2d) and child.bias is None:
                child.bias = nn.Parameter(child.weight.new_zeros(child.out_channels))
    return model, forward


def worker(args) -> None:
    import torch

    import tdbn
    from _nets import build_tdbn

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.impl == "floor":
        model, forward = _floor_folded(args.width, args.T)
    else:
        model, forward = build_tdbn(args.width, args.T)
    model.eval()
    if args.impl == "tdbn-fused":
        model = tdbn.fuse(model)
    x = torch.randn(args.batch, 3, 32, 32)
    times = []
    with torch.inference_mode():
        for r in range(args.reps + 1):
            t0 = time.perf_counter()
            forward(model, x)
            if r:
                times.append(time.perf_counter() - t0)
    emit({"times": times})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS), help="width,N,T triples")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="tdbn", help=argparse.SUPPRESS)
    p.add_argument("--width", type=float, default=0.25, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    configs = [(float(w), int(n), int(t)) for w, n, t in (c.split(",") for c in args.configs)]
    results: dict = {}
    for _ in range(args.rounds):
        for cfg in configs:
            for impl in IMPLS:
                cli = ["--impl", impl, "--width", str(cfg[0]), "--batch", str(cfg[1]), "--T", str(cfg[2]),
                       "--reps", str(args.reps), "--threads", str(args.threads)]
                res = run_worker(sys.executable, Path(__file__), cli)
                results.setdefault((cfg, impl), []).append(res)
                status = res.get("error") or f"{1000 * median(res['times']):.0f} ms"
                print(f"  {cfg} {impl}: {status}", file=sys.stderr, flush=True)
    rows = []
    for cfg in configs:
        ms = {}
        for impl in IMPLS:
            ok = [r for r in results[(cfg, impl)] if "error" not in r]
            ms[impl] = 1000 * median([median(r["times"]) for r in ok]) if ok else None
        fmt = lambda v: "error" if v is None else f"{v:.0f}"  # noqa: E731

        def ratio(a: str, b: str) -> str:  # median over rounds of the ratio within each round (back to back)
            pairs = [median(x["times"]) / median(y["times"]) for x, y in zip(results[(cfg, a)], results[(cfg, b)])
                     if "error" not in x and "error" not in y]
            return f"{median(pairs):.2f}x" if pairs else "-"

        rows.append([f"{cfg[0]:g}, {cfg[1]}, {cfg[2]}", fmt(ms["tdbn"]), fmt(ms["tdbn-fused"]), fmt(ms["floor"]),
                     ratio("tdbn-fused", "tdbn"), ratio("tdbn-fused", "floor")])
    print("ResNet-19 inference, one batch (median ms)\n")
    print(table(["width, N, T", "tdbn unfused", "tdbn fused", "ANN floor (BN folded)", "fused / unfused",
                 "fused / floor"], rows))
    print(f"\n{args.reps} forward passes after one warm-up, median over {args.rounds} round(s) (ratios: median of the "
          f"ratios within each round); torch threads: "
          f"{args.threads or 'default'}")
    print(f"machine: {machine()}; {datetime.date.today().isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
