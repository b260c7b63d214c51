"""Accuracy against wall-clock time of a run, from its ``metrics.jsonl``: a table, a CSV and a PNG plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tdbn.train.metrics_log import read_metrics

__all__ = ["COLUMNS", "curve_rows", "format_table", "plot_curve", "write_csv"]

COLUMNS = ("epoch", "minutes", "lr", "train_loss", "train_top1", "test_top1", "test_top5", "train_firing_rate",
           "images_per_s")


def curve_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per epoch: :data:`COLUMNS`, accuracies in percent; epochs without evaluation are skipped."""
    rows = []
    for r in read_metrics(run_dir):
        if "test_top1" not in r:
            continue
        rows.append({
            "epoch": r["epoch"], "minutes": r["elapsed_s"] / 60, "lr": r["lr"], "train_loss": r["train_loss"],
            "train_top1": 100 * r["train_top1"], "test_top1": 100 * r["test_top1"], "test_top5": 100 * r["test_top5"],
            "train_firing_rate": r["train_firing_rate"], "images_per_s": r["images_per_s"],
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows.

    >>> print(format_table([{"epoch": 1, "minutes": 2.5, "lr": 0.1, "train_loss": 0.3, "train_top1": 90.0,
    ...                      "test_top1": 95.0, "test_top5": 99.5, "train_firing_rate": 0.12, "images_per_s": 300}]))
    epoch  minutes      lr  train loss  train top-1  test top-1  test top-5  firing rate  img/s
        1      2.5  0.1000      0.3000        90.00       95.00       99.50        0.120    300
    """
    lines = ["epoch  minutes      lr  train loss  train top-1  test top-1  test top-5  firing rate  img/s"]
    for r in rows:
        lines.append(f"{r['epoch']:5d}  {r['minutes']:7.1f}  {r['lr']:6.4f}  {r['train_loss']:10.4f}  "
                     f"{r['train_top1']:11.2f}  {r['test_top1']:10.2f}  {r['test_top5']:10.2f}  "
                     f"{r['train_firing_rate']:11.3f}  {r['images_per_s']:5.0f}")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """Test top-1 (%) against minutes; needs matplotlib (``pip install tdbn[plot]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["minutes"] for r in rows], [r["test_top1"] for r in rows], "o-", label="test top-1")
    ax.plot([r["minutes"] for r in rows], [r["train_top1"] for r in rows], "s--", alpha=0.6, label="train top-1")
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
