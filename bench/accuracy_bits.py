"""Test accuracy of trained runs against the integer weight width K (integer deployment, docs/export.md).

    python bench/accuracy_bits.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--bits 8 6 4] [--limit N] [--out PREFIX]
    python bench/accuracy_bits.py --merge A.json B.json ... [--out PREFIX]    # table and plot of earlier results

For each run: top-1 of the float (fused) model and of the K-bit integer network (int64 simulation, per-layer
scales and 8-bit input unless ``--per-channel`` / ``--input-bits``) on the same ``--limit`` test samples (the
run's fixed random subset; all when omitted).
Prints a table and writes ``PREFIX.json`` and ``PREFIX.png`` (default ``docs/figures/accuracy_vs_bits``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tdbn.export.quant_eval import evaluate_integer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="LABEL=RUN_DIR")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="tabulate and plot these earlier results instead")
    p.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    p.add_argument("--limit", type=int)
    p.add_argument("--input-bits", type=int, default=8, help="signed width of the quantized image input")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel")
    p.add_argument("--out", default="docs/figures/accuracy_vs_bits")
    args = p.parse_args(argv)
    rows = [r for path in args.merge or [] for r in json.loads(Path(path).read_text())]
    if args.merge:
        args.bits = sorted({r["bits"] for r in rows}, reverse=True)
    elif not args.runs:
        p.error("name at least one LABEL=RUN_DIR, or --merge earlier results")
    for spec in args.runs:
        label, sep, run = spec.partition("=")
        if not sep:
            p.error(f"{spec!r}: write LABEL=RUN_DIR, e.g. mnist=runs/mnist-20261205-121334")
        for bits in args.bits:
            r = evaluate_integer(run, bits=bits, test_limit=args.limit, input_bits=args.input_bits,
                                 per_channel=args.per_channel)
            r["label"] = label
            rows.append(r)
            print(f"{label:10s} K={bits:2d}  integer {100 * r['top1_integer']:6.2f}%  "
                  f"float {100 * r['top1_float']:6.2f}%"
                  f"  same predictions {100 * r['same_predictions']:6.2f}%  ({r['samples']} samples, "
                  f"{r['seconds']:.0f} s)", flush=True)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    print(f"\n| data set (run) | samples | float | " + " | ".join(f"{b}-bit" for b in args.bits) + " |")
    print("|---|---|---|" + "---|" * len(args.bits))
    for label in labels:
        mine = {r["bits"]: r for r in rows if r["label"] == label}
        first = next(iter(mine.values()))
        print(f"| {label} | {first['samples']} | {100 * first['top1_float']:.2f} | "
              + " | ".join(f"{100 * mine[b]['top1_integer']:.2f}" if b in mine else "-" for b in args.bits) + " |")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'tdbn[plot]')")
        return 0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label in labels:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["bits"])
        line, = ax.plot([r["bits"] for r in mine], [100 * r["top1_integer"] for r in mine], "o-", label=label)
        ax.axhline(100 * mine[0]["top1_float"], color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel("integer weight bits K (dashed: float)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_xticks(sorted(set(args.bits)))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
