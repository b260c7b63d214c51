"""Training-step benchmark of the paper's ResNet-19: tdbn vs the ANN floor vs SpikingJelly and snnTorch.

One training step = forward + cross-entropy + backward + SGD step (lr 0.1, momentum 0.9), on random CIFAR-sized
images. Each (configuration, implementation) runs in a fresh process: ``--warmup`` steps, then ``--steps``
measured steps; the table gives the median step time and the whole-process peak RSS above the process's baseline
(the RSS once model and batch exist, before the first step; nothing is reset, so warm-up and compilation count,
as a user sees it) beside the live-tensor memory (a second run with glibc's mmap threshold at 1 MiB, where RSS
follows the live tensors). ``--amp bf16`` runs forward and loss under CPU autocast. ``--rounds`` repeats the whole sweep, interleaving implementations, and keeps the median per cell,
which makes the ratios robust to other load on the machine.

Implementations (see ``_nets.py``): ``tdbn`` (eager, what ``tdbn.models.create`` gives), ``tdbn-compiled``
(``torch.compile(model)``), ``floor`` (same net as an ANN: ReLU, BN, batch T*N), ``floor-compiled``, and the peers
``spikingjelly`` and ``snntorch`` when they import with ``--peer-python`` (a separate benchmark environment; they
are never project dependencies). A peer that does not import is skipped with the reason.

    python bench/train_step.py                               # the issue's four configurations
    python bench/train_step.py --configs 0.25,32,4 --steps 3 --impls tdbn,floor
    python bench/train_step.py --linear-in-T --configs 0.25,32 # T = 2, 4, 6, 8: CSV/JSON + figure
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import REPO, emit, machine, median, run_worker, table, timed  # noqa: E402

DEFAULT_CONFIGS = ("1,8,2", "1,8,4", "1,8,6", "0.25,32,2", "0.25,32,4", "0.25,32,6")
DEFAULT_IMPLS = ("tdbn", "floor", "spikingjelly", "snntorch")
PEERS = ("spikingjelly", "snntorch")
DEFAULT_PEER_PYTHON = REPO / ".bench-venv" / "bin" / "python"


# ------------------------------------------------------------------------------------------------ worker


def worker(args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    from _nets import build

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, forward = build(args.impl, args.width, args.T)
    if args.lean == "off":
        from tdbn.operators.switches import lean_training

        args.lean_off = lean_training(False)  # kept referenced: off for the whole worker process
        args.lean_off.__enter__()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if args.impl.endswith("-compiled") else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    model.train()

    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.amp == "bf16" else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if amp is None:
            loss = nn.functional.cross_entropy(forward(run, x), y)
        else:
            with amp:
                loss = nn.functional.cross_entropy(forward(run, x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()  # first step: compilation for the compiled variants
    first = time.perf_counter() - t0
    res = timed(step, warmup=max(0, args.warmup - 1), steps=args.steps)
    res["first_step_s"] = first
    res["params"] = sum(p.numel() for p in model.parameters())
    emit(res)


# ------------------------------------------------------------------------------------------------ driver


def _measure(args, impl: str, width: float, N: int, T: int, python: str, *, live: bool) -> dict:
    steps, warmup = (args.live_steps, 1) if live else (args.steps, args.warmup)
    cli = ["--impl", impl, "--width", str(width), "--batch", str(N), "--T", str(T), "--steps", str(steps),
           "--warmup", str(warmup), "--lean", args.lean, "--threads", str(args.threads), "--amp", args.amp]
    if args.channels_last:
        cli.append("--channels-last")
    if not live:
        return run_worker(python, Path(__file__), cli)
    # glibc returns blocks above the mmap threshold to the OS when freed: RSS then tracks the live tensors
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1024 * 1024)
    try:
        return run_worker(python, Path(__file__), cli)
    finally:
        if old is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old


def sweep(args, configs: list[tuple[float, int, int]], impls: list[str]) -> dict:
    """``{(config, impl): [result per round]}``, implementations interleaved within each round."""
    peer_python = str(args.peer_python)
    skipped: dict[str, str] = {}
    for peer in PEERS:
        if peer in impls:
            probe = run_worker(peer_python, Path(__file__), ["--probe", peer]) if Path(peer_python).exists() else {
                "error": f"no benchmark environment at {peer_python} (see docs/performance.md)"}
            if "error" in probe or not probe.get("ok"):
                skipped[peer] = probe.get("error") or probe.get("reason", "unavailable")
    impls = [i for i in impls if i not in skipped]
    results: dict = {}
    for r in range(args.rounds):
        for cfg in configs:
            for impl in impls:
                python = peer_python if impl in PEERS else sys.executable
                res = _measure(args, impl, *cfg, python, live=False)
                if "error" not in res and args.live_steps > 0:
                    live = _measure(args, impl, *cfg, python, live=True)
                    res["live_mb"] = live["peak_mb"] - live["base_mb"] if "error" not in live else None
                results.setdefault((cfg, impl), []).append(res)
                status = res.get("error") or (f"{1000 * median(res['times']):.0f} ms, "
                                              f"{res['peak_mb'] - res['base_mb']:.0f} MB RSS, "
                                              f"{res.get('live_mb') or float('nan'):.0f} MB live")
                print(f"  round {r + 1} {cfg} {impl}: {status}", file=sys.stderr, flush=True)
    return {"results": results, "skipped": skipped, "impls": impls}


def summarize(cells: list[dict]) -> dict | None:
    ok = [c for c in cells if "error" not in c]
    if not ok:
        return None
    live = [c["live_mb"] for c in ok if c.get("live_mb") is not None]
    return {
        "ms": 1000 * median([median(c["times"]) for c in ok]),
        "rss_mb": median([c["peak_mb"] - c["base_mb"] for c in ok]),
        "whole_mb": median([c.get("whole_peak_mb", c["peak_mb"]) - c["base_mb"] for c in ok]),
        "live_mb": median(live) if live else None,
        "first_s": median([c["first_step_s"] for c in ok]),
    }


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def paired_time_ratio(ours: list[dict], ref: list[dict]) -> float | None:
    """Median over rounds of the step-time ratio within each round: the cells of one round run back to back,
    so slow drifts of the machine's speed cancel, where a ratio of medians over rounds keeps them."""
    ratios = [median(a["times"]) / median(b["times"])
              for a, b in zip(ours, ref) if "error" not in a and "error" not in b]
    return median(ratios) if ratios else None


def report(args, out: dict, configs, title: str) -> str:
    impls = out["impls"]
    ours = [i for i in impls if i.startswith("tdbn")]
    refs = [i for i in impls if not i.startswith("tdbn")]
    rows, ratio_rows, records = [], [], []
    for cfg in configs:
        s = {i: summarize(out["results"][(cfg, i)]) for i in impls}
        name = f"{cfg[0]:g}, {cfg[1]}, {cfg[2]}"
        row = [name]
        for i in impls:
            if s[i] is None:
                row.append("error")
                continue
            live = "-" if s[i]["live_mb"] is None else f"{s[i]['live_mb']:.0f}"
            row.append(f"{s[i]['ms']:.0f} ms / {s[i]['whole_mb']:.0f} MB / {live} MB")
        rows.append(row)
        for o in ours:
            for r in refs:
                if s[o] is None or s[r] is None:
                    continue
                paired = paired_time_ratio(out["results"][(cfg, o)], out["results"][(cfg, r)])
                ratio_rows.append([name, f"{o} / {r}", "-" if paired is None else f"{paired:.2f}x",
                                   _ratio(s[o]["live_mb"], s[r]["live_mb"]), _ratio(s[o]["whole_mb"], s[r]["whole_mb"])])
        records.append({"width": cfg[0], "N": cfg[1], "T": cfg[2], **{i: s[i] for i in impls}})
    lines = [title, "", table(["width, N, T", *impls], rows), ""]
    if ratio_rows:
        lines += [table(["width, N, T", "ratio", "step time", "live memory", "whole-process peak RSS"], ratio_rows), ""]
    comp = [(cfg, i, summarize(out["results"][(cfg, i)])) for cfg in configs for i in impls if i.endswith("compiled")]
    if comp:
        lines.append("compile time (first step): " + ", ".join(
            f"{i} {c[0]:g},{c[1]},{c[2]}: {s['first_s']:.0f} s" for c, i, s in comp if s))
    for peer, why in out["skipped"].items():
        lines.append(f"skipped {peer}: {why}")
    threads = args.threads or "default"
    lines.append(
        f"cells: median step time / whole-process peak RSS above the baseline before the first step (glibc defaults, "
        f"nothing reset: warm-up and compilation included) / peak RSS above baseline with the mmap "
        f"threshold at 1 MiB (live tensors); precision {args.amp}; {args.steps} measured steps after {args.warmup} warm-up "
        f"({args.live_steps} for the live-memory run), median over {args.rounds} round(s) (time ratios: median of the "
        f"ratios within each round); torch threads: {threads}; "
        f"lean storage {args.lean}; {'channels-last' if args.channels_last else 'contiguous (NCHW)'}")
    lines.append(f"machine: {machine()}; {datetime.date.today().isoformat()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "skipped": out["skipped"],
                                               "machine": machine(), "date": datetime.date.today().isoformat()},
                                              indent=1))
    return "\n".join(lines)


def linear_in_T(args) -> None:
    """Time and memory at T = 2, 4, 6, 8 for each configuration ``width,N``: CSV + JSON + figure."""
    Ts = [int(t) for t in args.Ts.split(",")]
    impls = args.impls.split(",")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.configs or ["0.25,32"]:
        w, n = spec.split(",")[:2]
        configs = [(float(w), int(n), T) for T in Ts]
        res = sweep(args, configs, impls)
        for cfg in configs:
            for impl in res["impls"]:
                s = summarize(res["results"][(cfg, impl)])
                if s:
                    rows.append({"impl": impl, "width": cfg[0], "N": cfg[1], "T": cfg[2], "ms": round(s["ms"], 1),
                                 "mb": round(s["live_mb"] if s["live_mb"] is not None else s["rss_mb"], 1)})
    csv = ["impl,width,N,T,ms,mb", *[f"{r['impl']},{r['width']:g},{r['N']},{r['T']},{r['ms']},{r['mb']}" for r in rows]]
    (out_dir / "linear_in_T.csv").write_text("\n".join(csv) + "\n")
    (out_dir / "linear_in_T.json").write_text(json.dumps({"rows": rows, "machine": machine(),
                                                          "date": datetime.date.today().isoformat()}, indent=1))
    print("\n".join(csv))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key in sorted({(r["impl"], r["width"], r["N"]) for r in rows}):
        pts = sorted((r["T"], r["ms"], r["mb"]) for r in rows if (r["impl"], r["width"], r["N"]) == key)
        label = f"{key[0]} (width {key[1]:g}, N {key[2]})"
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    axes[0].set(xlabel="T", ylabel="median step time (ms)", title="training step time")
    axes[1].set(xlabel="T", ylabel="peak memory above baseline (MB)", title="training step memory (live)")
    for ax in axes:
        ax.set_xticks(Ts)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "linear_in_T.png", dpi=110)
    print(f"wrote {out_dir / 'linear_in_T.png'}")


def probe(name: str) -> None:
    from _nets import peer_available

    why = peer_available(name)
    emit({"ok": why is None, "reason": why})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=None, help="width,N,T triples (default: the issue's four)")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help="comma-separated implementations")
    p.add_argument("--steps", type=int, default=3, help="measured steps per process")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps per process (the first compiles)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the sweep, interleaved; medians per cell")
    p.add_argument("--live-steps", type=int, default=1, help="steps of the live-memory run (0: skip it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in every worker (0: torch's default)")
    p.add_argument("--lean", choices=["on", "off"], default="on", help="tdbn's lean storage (for comparison)")
    p.add_argument("--amp", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast on the CPU")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format for every model")
    p.add_argument("--peer-python", default=str(DEFAULT_PEER_PYTHON), help="python of the benchmark environment")
    p.add_argument("--json", default=None, help="also write the table's numbers to this JSON file")
    p.add_argument("--linear-in-T", action="store_true", help="sweep T for --configs width,N pairs; CSV/JSON/figure")
    p.add_argument("--Ts", default="2,4,6,8")
    p.add_argument("--out-dir", default=str(REPO / "docs" / "figures"))
    # worker mode (one measurement in this process)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--impl", default="tdbn", help=argparse.SUPPRESS)
    p.add_argument("--width", type=float, default=0.25, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker and args.probe:
        probe(args.probe)
        return 0
    if args.worker:
        worker(args)
        return 0
    if args.linear_in_T:
        linear_in_T(args)
        return 0
    configs = [tuple(float(v) if i == 0 else int(v) for i, v in enumerate(c.split(","))) for c in
               (args.configs or DEFAULT_CONFIGS)]
    out = sweep(args, configs, args.impls.split(","))
    print(report(args, out, configs, "ResNet-19 training step (median step time / peak RSS above baseline)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
