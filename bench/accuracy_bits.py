"""Test accuracy of trained runs against the integer weight width K (integer deployment, docs/export.md).

    python bench/accuracy_bits.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--bits 8 6 4] [--limit N] [--out PREFIX]
    python bench/accuracy_bits.py --tuned LABEL=FINETUNED_RUN [...] [--limit N] [--out PREFIX]
    python bench/accuracy_bits.py --merge A.json B.json ... [--out PREFIX]    # table and plot of earlier results

For each run: top-1 of the float (fused) model and of the K-bit integer network (int64 simulation, per-layer
scales and 8-bit input unless ``--per-channel`` / ``--input-bits``) on the same ``--limit`` test samples (the
run's fixed random subset; all when omitted). ``--tuned``: runs of ``tdbn finetune``, each evaluated at the one
setting it was fine-tuned for (its checkpoint's ``quantization``); several such runs may share a label, one per K,
and make one line of the plot (solid markers, no float line: their float weights were trained for the integers).
Prints a table and writes ``PREFIX.json`` and ``PREFIX.png`` (default ``docs/figures/accuracy_vs_bits``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tdbn.export.quant_eval import evaluate_integer  # noqa: E402


def _tuned_setting(run: str) -> tuple[int, bool, int]:
    """``(bits, per_channel, input_bits)`` a ``tdbn finetune`` run was fine-tuned for; refused for other runs."""
    from tdbn.train.checkpoint import load_checkpoint
    from tdbn.train.restore import checkpoint_file

    q = load_checkpoint(checkpoint_file(run)).get("quantization")  # read, verified; the model is built once, later
    if not q:
        raise SystemExit(f"{run}: not a run of tdbn finetune (its checkpoint holds no 'quantization'); drop --tuned")
    return int(q["bits"]), bool(q["per_channel"]), int(q["input_bits"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="LABEL=RUN_DIR")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="tabulate and plot these earlier results instead")
    p.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    p.add_argument("--limit", type=int)
    p.add_argument("--input-bits", type=int, default=8, help="signed width of the quantized image input")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel")
    p.add_argument("--tuned", action="store_true", help="fine-tuned runs, each at the setting it was tuned for")
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
        settings = [(b, args.per_channel, args.input_bits) for b in args.bits]
        if args.tuned:
            settings = [_tuned_setting(run)]
        for bits, per_channel, input_bits in settings:
            r = evaluate_integer(run, bits=bits, test_limit=args.limit, input_bits=input_bits,
                                 per_channel=per_channel)
            r["label"], r["tuned"] = label, args.tuned
            rows.append(r)
            print(f"{label:10s} K={bits:2d}  integer {100 * r['top1_integer']:6.2f}%  "
                  f"float {100 * r['top1_float']:6.2f}%"
                  f"  same predictions {100 * r['same_predictions']:6.2f}%  ({r['samples']} samples, "
                  f"{r['seconds']:.0f} s)", flush=True)
    if args.tuned:
        args.bits = sorted({r["bits"] for r in rows}, reverse=True)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    print(f"\n| data set (run) | samples | float | " + " | ".join(f"{b}-bit" for b in args.bits) + " |")
    print("|---|---|---|" + "---|" * len(args.bits))
    for label in labels:
        mine = {r["bits"]: r for r in rows if r["label"] == label}
        first = next(iter(mine.values()))
        float_cell = "-" if first.get("tuned") else f"{100 * first['top1_float']:.2f}"
        print(f"| {label} | {first['samples']} | {float_cell} | "
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
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for label in labels:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["bits"])
        tuned = bool(mine[0].get("tuned"))
        line, = ax.plot([r["bits"] for r in mine], [100 * r["top1_integer"] for r in mine], "s:" if tuned else "o-",
                        label=label)
        if not tuned:
            ax.axhline(100 * mine[0]["top1_float"], color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel("integer weight bits K (dashed: float)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_xticks(sorted(set(args.bits)))
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)  # beside the axes: many lines
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
