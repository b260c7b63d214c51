"""The shared body of the accuracy-within-a-budget scripts (``accuracy_mnist.py``, ``accuracy_cifar10.py``).

Trains one preset for a wall-clock budget with :func:`_probe.train_for_budget` (bench/_probe.py), then prints the
accuracy-against-time table and writes ``curve.csv`` and ``curve.png`` into the run folder
``runs/bench-<preset>-<time>``.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads must not spin on a shared CPU (see docs/training.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main(preset: str, minutes: float, doc: str) -> int:
    """Parse the command line (budget, epochs, threads, overrides), train ``preset`` and report the curve."""
    import torch

    from tdbn.train import load_config
    from _curve import curve_rows, format_table, plot_curve, write_csv
    from _probe import train_for_budget

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=preset, help=f"the preset to train (default: {preset})")
    parser.add_argument("--budget-minutes", type=float, default=minutes)
    parser.add_argument("--epochs", type=int, default=None, help="fixed number of epochs (default: sized to budget)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--probe-only", action="store_true",
                        help="time 20 training steps, print the speed and minutes per epoch on this machine, and stop")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    preset = args.preset

    run_dir = Path("runs") / f"bench-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = ["progress=false", f"run_dir={run_dir}", *args.overrides]
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    print(f"command: {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()}")
    if args.probe_only:
        from _common import machine
        from _probe import train_throughput
        from tdbn.train.amp import resolve_amp

        cfg = load_config(preset, overrides)
        speed = train_throughput(cfg, steps=20)
        print(f"{machine()}\n{preset}: precision {resolve_amp(cfg.amp, torch.device('cpu'))} (amp={cfg.amp}), "
              f"{speed.samples_per_s:.1f} training samples/s, {speed.train_samples / speed.samples_per_s / 60:.1f} min "
              f"per epoch of {speed.train_samples} samples ({cfg.optim.epochs} epochs: "
              f"{cfg.optim.epochs * speed.train_samples / speed.samples_per_s / 60:.0f} min)")
        return 0
    start = time.perf_counter()
    cfg, final = train_for_budget(load_config(preset, overrides), minutes=args.budget_minutes, epochs=args.epochs)
    wall = time.perf_counter() - start
    rows = curve_rows(run_dir)
    print(format_table(rows))
    print(f"load average at end {os.getloadavg()}; wall time {wall / 60:.1f} min including the probe and data loading")
    print(f"final: {100 * final['test_top1']:.2f}% test top-1 after {final['elapsed_s'] / 60:.1f} min of training "
          f"({final['epoch']}/{cfg.optim.epochs} epochs)")
    write_csv(rows, run_dir / "curve.csv")
    try:
        plot_curve(rows, run_dir / "curve.png", title=f"{preset}: accuracy vs time")
        print(f"wrote {run_dir / 'curve.csv'} and {run_dir / 'curve.png'}")
    except ImportError:
        print(f"wrote {run_dir / 'curve.csv'} (no curve.png: pip install tdbn[plot])")
    return 0
