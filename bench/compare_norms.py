"""Equal-budget comparison of tdBN and its successors: every method trained on the same network, data, schedule and
epoch budget, several seeds; a table (mean and spread of the final test top-1, training time) and a plot of test
accuracy against training time.

Methods: ``tdbn`` (the paper), ``tdbn-tet`` (tdBN with the TET loss), ``bn`` (plain BN), ``tebn``, ``bntt``,
``tab``, ``mpbn`` (``model.norm=...``; docs/method.md, "8. Successors"). Each (method, seed) is one ``tdbn train``
in its own process, one after the other (one heavy run at a time), in ``OUT/<method>-s<seed>/``. Resumable: a finished
run is kept (its ``done.json``; a run that failed, e.g. diverged, is recorded as such), an interrupted one continues
from its checkpoint (``tdbn train --resume``), so a long comparison can be stopped (Ctrl-C) and started again with the
same command.

    python bench/compare_norms.py mnist --seeds 0 1 2 --set optim.epochs=1 data.train_limit=6000
    python bench/compare_norms.py nmnist --seeds 0 1 2 --set optim.epochs=3
    python bench/compare_norms.py mnist --report-only            # table and plot from the runs there are

Writes ``OUT/summary.json``, ``OUT/summary.csv``, ``OUT/curves.png`` (``OUT``: ``runs/compare-<preset>``) and prints
the table; ``--figures docs/figures`` copies them there as ``norms-<preset>.*``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tdbn.train.metrics_log import read_metrics  # noqa: E402

METHODS = {
    "tdbn": ["model.norm=tdbn"],
    "tdbn-tet": ["model.norm=tdbn", "optim.loss=tet"],
    "bn": ["model.norm=bn"],
    "tebn": ["model.norm=tebn"],
    "bntt": ["model.norm=bntt"],
    "tab": ["model.norm=tab"],
    "mpbn": ["model.norm=mpbn"],
}

#: CIFAR-10 ResNet-19 top-1 (%) as the papers report it (their recipes: full width, hundreds of epochs on GPUs,
#: augmentation and schedules of their own), for orientation beside ours; BNTT reports VGG-9 at T = 25.
PUBLISHED_CIFAR10 = {
    "tdbn": "92.34 (T=2), tdBN paper",
    "tdbn-tet": "94.16 (T=2), TET paper",
    "tebn": "94.70 (T=2), TEBN paper",
    "bntt": "90.5 (VGG-9, T=25), BNTT paper",
    "tab": "94.73 (T=2), TAB paper",
    "mpbn": "96.47 (T=2), MPBN paper",
}


def _run_folder(slot: Path) -> Path | None:
    runs = sorted(p for p in slot.glob("*/") if (p / "config.yaml").exists() or (p / "metrics.jsonl").exists())
    return runs[-1] if runs else None


def train_one(preset: str, method: str, seed: int, slot: Path, extra: list[str], threads: int | None) -> Path:
    """Train (or resume) one (method, seed) in ``slot``; returns its run folder."""
    done = slot / "done.json"
    if done.exists():
        return Path(json.loads(done.read_text())["run"])
    slot.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = _run_folder(slot)
    if run is not None and (run / "checkpoint.pt").exists():
        cmd = [sys.executable, "-m", "tdbn.cli", "train", "--resume", str(run)]
    else:
        cmd = [sys.executable, "-m", "tdbn.cli", "train", *([] if preset == "defaults" else [preset]),
               *METHODS[method], f"seed={seed}",
               f"out_dir={slot}", f"name={preset}-{method}", "progress=false", *extra]
        if threads:
            cmd.append(f"threads={threads}")
    print(f"[{time.strftime('%H:%M:%S')}] {method} seed {seed}: {' '.join(cmd[3:])}", flush=True)
    proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    run = _run_folder(slot)
    record = {"run": str(run), "method": method, "seed": seed}
    if proc.returncode == 130 or proc.returncode < 0:
        raise KeyboardInterrupt  # stopped: resume later
    if proc.returncode != 0:  # a run that failed (e.g. diverged) is a result of the comparison: recorded, not retried
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        record["failed"] = lines[-1] if lines else f"exit status {proc.returncode}"
    done.write_text(json.dumps(record))
    return run


def curve(run: Path) -> list[tuple[float, float]]:
    """``(training minutes, test top-1 %)`` after every evaluated epoch."""
    return [(r["elapsed_s"] / 60, 100 * r["test_top1"]) for r in read_metrics(run) if "test_top1" in r]


def summarize(out: Path, methods: list[str], seeds: list[int], title: str) -> dict:
    rows = []
    curves = {}
    for method in methods:
        finals, minutes, per_seed, failed = [], [], [], []
        for seed in seeds:
            done = out / f"{method}-s{seed}" / "done.json"
            if not done.exists():
                continue
            record = json.loads(done.read_text())
            if "failed" in record:
                failed.append(f"seed {seed}: {record['failed']}")
                continue
            c = curve(Path(record["run"]))
            if c:
                per_seed.append(c)
                finals.append(c[-1][1])
                minutes.append(c[-1][0])
        if not finals and not failed:
            continue
        curves[method] = per_seed
        rows.append({
            "method": method, "seeds": len(finals), "top1_mean": statistics.mean(finals) if finals else None,
            "top1_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0, "top1_each": finals,
            "train_min_mean": statistics.mean(minutes) if minutes else None, "failed": failed,
            "published_cifar10": PUBLISHED_CIFAR10.get(method, ""),
        })
    summary = {"title": title, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds", "top1_mean", "top1_sd", "top1_each", "train_min_mean", "failed",
                    "published_cifar10"])
        for r in rows:
            w.writerow([r["method"], r["seeds"], _fmt(r["top1_mean"]), _fmt(r["top1_sd"]),
                        " ".join(f"{v:.2f}" for v in r["top1_each"]), _fmt(r["train_min_mean"]),
                        "; ".join(r["failed"]), r["published_cifar10"]])
    _plot(curves, out / "curves.png", title)
    return summary


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, runs) in enumerate(curves.items()):
        color = f"C{i}"
        for j, c in enumerate(runs):
            ax.plot([m for m, _ in c], [a for _, a in c], "o-", color=color, alpha=0.8, ms=3,
                    label=method if j == 0 else None)
    import textwrap

    ax.set_xlabel("wall time of the run at each evaluation (minutes; the runs' elapsed_s)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(summary: dict) -> str:
    lines = ["| method | seeds | test top-1 (mean +- sd) | each seed | training min (mean) | failed runs | "
             "published (CIFAR-10, ResNet-19) |", "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        acc = "" if r["top1_mean"] is None else f"{r['top1_mean']:.2f} +- {r['top1_sd']:.2f}"
        mins = "" if r["train_min_mean"] is None else f"{r['train_min_mean']:.1f}"
        lines.append(f"| {r['method']} | {r['seeds']} | {acc} | {', '.join(f'{v:.2f}' for v in r['top1_each'])} | "
                     f"{mins} | {'; '.join(r['failed'])} | {r['published_cifar10']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help="the training preset all methods share (mnist, nmnist, cifar10_resnet19_cpu, ...; "
                                  "'defaults': the embedded digits)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {list(METHODS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides every run shares")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every run (default: torch's)")
    p.add_argument("--out", default=None, help="runs and results folder (default: runs/compare-<preset>)")
    p.add_argument("--figures", default=None, help="also copy summary.json/.csv and curves.png here as "
                                                   "norms-<preset>.* (e.g. docs/figures)")
    p.add_argument("--report-only", action="store_true", help="no training: table and plot of the runs there are")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; valid: {list(METHODS)}")
    out = Path(args.out or Path("runs") / f"compare-{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in args.seeds:  # seed-major: a stopped comparison has every method at the seeds it finished
            for method in methods:
                train_one(args.preset, method, seed, out / f"{method}-s{seed}", args.set, args.threads)
    title = f"{args.preset} {' '.join(args.set)}: equal epoch budget, seeds {args.seeds}"
    summary = summarize(out, methods, args.seeds, title)
    print(table(summary))
    print(f"wrote {out / 'summary.json'}, {out / 'summary.csv'}, {out / 'curves.png'}")
    if args.figures:
        import shutil

        fig = Path(args.figures)
        for name, suffix in (("summary.json", "json"), ("summary.csv", "csv"), ("curves.png", "png")):
            shutil.copyfile(out / name, fig / f"norms-{args.preset}.{suffix}")
        print(f"copied to {fig}/norms-{args.preset}.{{json,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
