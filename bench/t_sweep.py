"""Accuracy against the number of time steps T on CIFAR-10 at a fixed CPU budget (the trend of the paper's Table 1:
92.34 / 92.92 / 93.16 % at T = 2 / 4 / 6 for the full-width ResNet-19).

    .venv/bin/python bench/t_sweep.py [--timesteps 1 2 4] [--epochs 2] [--threads 2] [key=value ...]

Trains the ``cifar10_resnet19_cpu`` preset (ResNet-19 at width 1/4, bf16, batch 64, cosine schedule) once per T
with the same number of epochs, seed and data order, tests each on all 10,000 CIFAR-10 test images
(``data.test_limit=null``), and writes ``docs/figures/accuracy_vs_T.{json,csv,png}``. The run folders (with their
checkpoints: the T = 2 one serves ``tdbn analyze spikes / ops --checkpoint``) go to ``runs/t_sweep/T<T>``, which
git ignores. A finished run is not trained again and an interrupted one is resumed from its checkpoint, so the
script can be rerun after an interruption. Cost on the idle 2-core machine, from the T = 2 preset's 7.2 min per
epoch and time roughly linear in T: about 3.6 + 7.2 + 14.4 = 25 min per epoch of the three runs, so the default
2 epochs take about an hour.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: no spinning on a shared CPU

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

PRESET = "cifar10_resnet19_cpu"
PAPER = {2: 92.34, 4: 92.92, 6: 93.16}  # Table 1, full-width ResNet-19, CIFAR-10


def run_one(timesteps: int, *, epochs: int, root: Path, threads: int | None, overrides: list[str]) -> dict:
    """Train (or finish, or just read) the run for ``timesteps``; its last metrics record."""
    from tdbn.train import load_config, read_metrics, train

    run_dir = root / f"T{timesteps}"
    keys = [f"model.timesteps={timesteps}", f"optim.epochs={epochs}", "data.test_limit=null", "progress=false",
            f"run_dir={run_dir}", *([f"threads={threads}"] if threads is not None else []), *overrides]
    cfg = load_config(PRESET, keys)
    done = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    if done and done[-1]["epoch"] == epochs and "test_top1" in done[-1]:
        print(f"T = {timesteps}: finished run found in {run_dir}, not retrained")
        return done[-1]
    resume = run_dir if (run_dir / "checkpoint.pt").exists() else None
    return train(cfg, resume=resume)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=2, help="the same for every T (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", default="runs/t_sweep", help="parent of the run folders (default: %(default)s)")
    parser.add_argument("--out", default="docs/figures/accuracy_vs_T", help="writes OUT.json, OUT.csv, OUT.png")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset, the same for every T")
    args = parser.parse_args()

    rows = []
    for t in args.timesteps:
        start = time.perf_counter()
        final = run_one(t, epochs=args.epochs, root=Path(args.runs), threads=args.threads, overrides=args.overrides)
        rows.append({"timesteps": t, "epochs": final["epoch"], "test_top1": 100 * final["test_top1"],
                     "train_minutes": final["elapsed_s"] / 60, "paper_full_width": PAPER.get(t),
                     "wall_minutes_this_invocation": (time.perf_counter() - start) / 60})
        print(f"T = {t}: {rows[-1]['test_top1']:.2f}% test top-1 after {rows[-1]['epochs']} epochs, "
              f"{rows[-1]['train_minutes']:.1f} min of training", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"preset": PRESET, "epochs": args.epochs, "overrides": args.overrides, "test_images": 10000,
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "load_average_at_end": os.getloadavg()}
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| T | epochs | test top-1 (%) | training (min) | paper, full width (%) |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        paper = f"{r['paper_full_width']:.2f}" if r["paper_full_width"] is not None else "-"
        print(f"| {r['timesteps']} | {r['epochs']} | {r['test_top1']:.2f} | {r['train_minutes']:.1f} | {paper} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out}.json and {out}.csv (no PNG: pip install tdbn[plot])")
        return 0
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.plot([r["timesteps"] for r in rows], [r["test_top1"] for r in rows], marker="o",
            label=f"ResNet-19 width 1/4, {args.epochs} epochs")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_xticks([r["timesteps"] for r in rows])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out}.json, {out}.csv and {out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
