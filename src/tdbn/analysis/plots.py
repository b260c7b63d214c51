"""Figures for the analysis results. matplotlib is an optional extra (``pip install tdbn[plot]``), imported here
inside each function, never at package import."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'tdbn[plot]' (or pass --no-plot)") from e
    return plt


def require_matplotlib() -> None:
    """``ImportError`` naming the extra when matplotlib is missing: called before an analysis does its work."""
    _pyplot()


def _wrap(text: str, inches: float, fontsize: float = 10) -> str:
    """``text`` broken into lines that fit ``inches`` at ``fontsize`` points (each given line wrapped alone)."""
    per_line = max(20, int(inches * 72 / (0.55 * fontsize)))  # a DejaVu Sans character is about 0.55 em wide
    return "\n".join(textwrap.fill(part, per_line) for part in text.split("\n"))


def _save(fig, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not fig.get_constrained_layout():  # (a constrained layout places its texts itself)
        fig.tight_layout()
    fig.savefig(p, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return p


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    panels: dict[str, list[str]] | None = None,
    rows: int = 1,
) -> Path:
    """Curves ``label -> (x, y)``; with ``panels`` (``panel title -> labels``), one subplot per panel, on
    ``rows`` rows."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    groups = panels or {title: list(series)}
    cols = math.ceil(len(groups) / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, (name, labels) in zip(axes.flat, groups.items()):
        for label in labels:
            xs, ys = series[label]
            pts = [(a, b) for a, b in zip(xs, ys) if math.isfinite(b) and (b > 0 or not logy)]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(_wrap(name, 4.0), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def histogram_panels(
    panels: Sequence[dict],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    rows: int = 1,
) -> Path:
    """One subplot per panel ``{"title", "edges", "bars": {label: heights}}``: step histograms on shared edges."""
    plt = _pyplot()
    cols = math.ceil(len(panels) / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        edges = panel["edges"]
        for label, heights in panel["bars"].items():
            ax.stairs(heights, edges, label=label, fill=len(panel["bars"]) == 1, alpha=0.8)
        ax.set_title(_wrap(panel["title"], 3.6), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(panel["bars"]) > 1:
            ax.legend(fontsize=8)
    return _save(fig, path)


def bar_plot(
    groups: dict[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    note: str = "",
) -> Path:
    """One subplot per group ``title -> values`` (stacked vertically), bars at positions 1..n; ``title`` above them
    all, ``note`` (e.g. which weights) in small type below. Every text is wrapped to the figure's width."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    width = max(6.0, 0.25 * max(len(v) for v in groups.values()))
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, 3.2 * len(groups)), squeeze=False,
                             layout="constrained")  # room for each panel's own title, however many lines
    for ax, (name, values) in zip(axes[:, 0], groups.items()):
        ax.bar(range(1, len(values) + 1), values)
        ax.set_xlabel(_wrap(xlabel, width - 1.0))
        ax.set_ylabel(ylabel)
        ax.set_title(_wrap(name, width - 1.0), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(_wrap(title, width - 0.4, 11), fontsize=11)
    if note:
        fig.supxlabel(_wrap(note, width - 0.4, 8), fontsize=8, color="0.3")
    return _save(fig, path)
