"""The ``tdbn`` command: thin subcommands over the library.

    tdbn train [PRESET_OR_YAML] [key=value ...] [--resume RUN_DIR] [--device DEVICE]
    tdbn eval CHECKPOINT [--data ROOT] [--fuse] [--limit N] [--out FILE.json] [--force]
    tdbn presets
    tdbn finetune RUN_DIR --bits K --out NEW_RUN [--per-channel] [--epochs E] [--lr LR] ...
    tdbn stream RUN_DIR --events FILE [--fuse] ...   (tdbn.stream.cli)
    tdbn export ...      (tdbn.export.cli)
    tdbn analyze ...     (tdbn.analysis.cli)

``tdbn train`` with no argument trains the embedded demo (a narrow spiking ResNet-19 on scikit-learn's digits).
Multi-process training: ``torchrun --nproc_per_node=K -m tdbn.cli train PRESET ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _split_train_args(items: list[str]) -> tuple[str | None, list[str]]:
    """``[PRESET_OR_YAML] [key=value ...]`` -> (preset or None, overrides)."""
    if items and "=" not in items[0]:
        preset, rest = items[0], items[1:]
    else:
        preset, rest = None, items
    stray = [a for a in rest if "=" not in a]
    if stray:
        raise ValueError(f"expected key=value overrides after the preset, got {stray}")
    return preset, rest


def _cmd_train(args: argparse.Namespace) -> int:
    from tdbn.train import TrainingError, load_config, override, saved_config, train

    preset, overrides = _split_train_args(args.args)
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.resume is not None and preset is None:
        if not Path(args.resume).is_dir():
            raise TrainingError(f"--resume {args.resume}: no such run folder")
        cfg = override(saved_config(args.resume), overrides)  # the run's own configuration
    else:
        cfg = load_config(preset, overrides)
    final = train(cfg, resume=args.resume)
    return 0 if final else 1


def _check_eval_args(args: argparse.Namespace) -> None:
    """Every bad ``tdbn eval`` option, before anything is read."""
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"the test limit must be >= 1 sample, got {args.limit} (omit --limit for the whole split)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.bits is None:
        if args.per_channel:
            raise ValueError("--per-channel applies to the integer network: pass --bits K too")
        return
    if args.fuse:
        raise ValueError("--bits always quantizes the fused network; drop --fuse")
    if not 2 <= args.bits <= 16:
        raise ValueError(f"--bits must be 2..16 (signed integer weights), got {args.bits}")
    if not 2 <= args.input_bits <= 16:
        raise ValueError(f"--input-bits must be 2..16 (signed integer inputs), got {args.input_bits}")


def _eval_name(args: argparse.Namespace) -> str:
    """``eval[-fused][-limitN].json``, or ``eval-intK[-per-channel][-inputB][-limitN].json`` with ``--bits K``: a
    result of other settings never takes the name of another's (a subset's never that of the whole split's)."""
    if args.bits is not None:
        kind = f"-int{args.bits}" + ("-per-channel" if args.per_channel else "") + \
            (f"-input{args.input_bits}" if args.input_bits != 8 else "")
    else:
        kind = "-fused" if args.fuse else ""
    return f"eval{kind}" + (f"-limit{args.limit}" if args.limit is not None else "") + ".json"


def _eval_settings(args: argparse.Namespace, checkpoint: Path) -> dict[str, object]:
    """What decides a result: the checkpoint (its digest), the network evaluated, the samples, the device."""
    from tdbn.train.checkpoint import checkpoint_digest
    from tdbn.train.distributed import resolve_device

    settings: dict[str, object] = {
        "checkpoint_sha256": checkpoint_digest(checkpoint),
        "fused": args.fuse, "limit": args.limit, "data": str(Path(args.data).resolve()) if args.data else None,
        "batch_size": args.batch_size,
        "device": "cpu" if args.bits is not None else str(resolve_device(args.device)),  # (integers: on the CPU)
    }
    if args.bits is not None:
        settings |= {"bits": args.bits, "per_channel": args.per_channel, "input_bits": args.input_bits}
    return settings


def _differences(before: dict[str, object], now: dict[str, object]) -> str:
    """The settings in which an earlier result differs from this one, in words ("" when they are the same)."""

    def shown(value: object) -> str:
        return "default" if value is None else str(value)

    changed = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            changed.append("another checkpoint (the run has changed since)" if key == "checkpoint_sha256" else
                           f"{key}: {shown(before.get(key))} then, {shown(now.get(key))} now")
    return "; ".join(changed)


def _eval_output(args: argparse.Namespace) -> tuple[Path, dict[str, object]]:
    """Where ``tdbn eval`` writes (``--out``, else :func:`_eval_name` beside the checkpoint) and the settings it
    records there. Called before the evaluation, which may take minutes: an existing file is replaced only when it
    holds the result of the same settings (the same evaluation again) or with ``--force``."""
    from tdbn.train.restore import checkpoint_file

    _check_eval_args(args)
    ckpt = checkpoint_file(args.checkpoint)  # a missing checkpoint is reported before anything else
    out = Path(args.out) if args.out else ckpt.parent / _eval_name(args)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist; create it or name another file")
    settings = _eval_settings(args, ckpt)
    if out.exists() and not args.force:
        try:
            before = json.loads(out.read_text()).get("settings")
        except (OSError, ValueError, AttributeError):
            before = None
        if not isinstance(before, dict):
            raise ValueError(f"{out} already exists and records no evaluation settings (another file, or a result of "
                             "an earlier version); pass --force to replace it, or --out FILE to write elsewhere")
        differ = _differences(before, settings)
        if differ:
            raise ValueError(f"{out} holds the result of other settings ({differ}); pass --force to replace it, or "
                             "--out FILE to write elsewhere")
    return out, settings


def _cmd_eval(args: argparse.Namespace) -> int:
    out, settings = _eval_output(args)  # before the evaluation, which may take minutes
    if args.bits is not None:
        from tdbn.export.cli import run_eval_bits

        result = run_eval_bits(args)
    else:
        from tdbn.train import evaluate_checkpoint

        result = evaluate_checkpoint(args.checkpoint, data_root=args.data, fuse=args.fuse, device=args.device,
                                     batch_size=args.batch_size, test_limit=args.limit, progress=not args.quiet)
        tag = " (fused)" if args.fuse else ""
        print(f"{result['checkpoint']} epoch {result['epoch']}{tag}: top-1 {100 * result['top1']:.2f}%  "
              f"top-5 {100 * result['top5']:.2f}%  loss {result['loss']:.4f}  firing rate "
              f"{result['firing_rate']:.4f}  ({result['samples']} test samples)")
    again = out.exists()
    out.write_text(json.dumps(result | {"settings": settings}, indent=2) + "\n")
    print(f"wrote {out}" + (" (again: the same settings)" if again and not args.force else ""))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from tdbn.export.finetune import finetune

    finetune(args.run, args.out, bits=args.bits, per_channel=args.per_channel, input_bits=args.input_bits,
             epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, train_limit=args.train_limit,
             data_root=args.data, threads=args.threads, progress=not args.quiet)
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from tdbn.stream.cli import run

    return run(args)


def _describe(path: Path) -> list[str]:
    """The comment lines heading a preset file: what it trains, then how long that takes on a CPU."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return lines


# the embedded demo has no preset file; measured like the presets (bench/preset_times.py)
_DEMO = ["the embedded demo: narrow spiking ResNet-19 on scikit-learn's 8x8 digits",
         "CPU: about 4 s per epoch x 20 epochs = 1.5 min on one core (67 s end to end on 2 idle cores, README)"]


def _cmd_presets(args: argparse.Namespace) -> int:
    from tdbn.train import preset_names, preset_path

    names = preset_names()
    width = max(len(n) for n in names)
    for name, (what, *more) in [("(none)", _DEMO), *((n, _describe(preset_path(n)) or [""]) for n in names)]:
        print(f"{name:<{width}}  {what}")
        for line in more:
            print(f"{'':<{width}}    {line}")
    print("(CPU: the CPU time of one core, extrapolated from a few timed batches by bench/preset_times.py; two threads "
          "on 2 idle cores take 1.2-1.9x less wall time)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tdbn.analysis.cli import add_subparser as add_analyze
    from tdbn.export.cli import add_subparser as add_export

    parser = argparse.ArgumentParser(prog="tdbn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a spiking network (default: the embedded digits demo)",
                       description="Train from the defaults, a preset or a YAML file, with key=value overrides "
                                   "(dotted keys for nested fields, e.g. optim.lr=0.05 model.timesteps=4).")
    p.add_argument("args", nargs="*", metavar="[PRESET_OR_YAML] [key=value ...]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present); same as device=...")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its test set")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--data", metavar="ROOT", help="data folder (default: the one recorded in the checkpoint)")
    p.add_argument("--fuse", action="store_true", help="evaluate the BN-fused, normalization-free network (Eq. 9-10)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--limit", type=int, help="evaluate on a fixed random subset of this many test samples")
    p.add_argument("--out", help="JSON file to write (default: eval.json, eval-fused.json, eval-limitN.json, "
                                 "eval-int8.json ... beside the checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="replace the JSON file even if it holds the result of other settings (a result of the same "
                        "settings is written again without it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bits", type=int, metavar="K",
                   help="evaluate the K-bit integer network (int64 simulation; docs/export.md) beside the float one")
    p.add_argument("--per-channel", action="store_true", help="with --bits: one scale per output channel")
    p.add_argument("--input-bits", type=int, default=8, metavar="B",
                   help="with --bits: signed width of the quantized image input (default 8)")
    p.set_defaults(func=_cmd_eval)

    from tdbn.export.finetune import LR, __doc__ as finetune_doc

    p = sub.add_parser("finetune", help="quantization-aware fine-tuning of a trained run for K-bit integer "
                                        "deployment (writes a new run)",
                       description=finetune_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder or checkpoint to fine-tune (from tdbn train or tdbn finetune; only read)")
    p.add_argument("--bits", type=int, required=True, metavar="K", help="integer weight width, 2..16")
    p.add_argument("--per-channel", action="store_true", help="one scale and threshold per output channel")
    p.add_argument("--input-bits", type=int, default=8, metavar="B",
                   help="signed width of the quantized image input (default 8)")
    p.add_argument("--out", required=True, metavar="NEW_RUN", help="the new run folder to write (absent or empty)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    p.add_argument("--lr", type=float, default=LR, help=f"initial learning rate, cosine schedule (default {LR})")
    p.add_argument("--batch-size", type=int, help="default: the source run's")
    p.add_argument("--train-limit", type=int, metavar="N",
                   help="fine-tune on a fixed random subset of N training samples")
    p.add_argument("--data", metavar="ROOT", help="data folder (default: the one recorded in the run)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=_cmd_presets)

    from tdbn.stream import cli as stream_cli

    p = sub.add_parser("stream", help="run a trained network step by step on an event file replayed as a live stream",
                       description=stream_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    stream_cli.add_arguments(p)
    p.set_defaults(func=_cmd_stream)

    add_export(sub)  # tdbn export ...
    add_analyze(sub)  # tdbn analyze ...
    return parser


def _exec_with_passive_openmp() -> None:
    """Restart this command with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set.

    By default OpenMP worker threads spin while waiting for work; on a CPU shared with other busy processes the
    spinning threads of each process steal the cores the others compute on, and training becomes ten times
    slower or worse. The policy is read once, when torch loads OpenMP, before any code of this module runs:
    hence a restart of the process (same arguments, same PID).
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    os.execve(sys.executable, [sys.executable, "-m", "tdbn.cli", *sys.argv[1:]], env)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tdbn`` command; returns the exit code (2 for a usage or data problem, with a clear message).

    Called without ``argv`` (the ``tdbn`` program), it first makes sure OpenMP threads wait passively
    (:func:`_exec_with_passive_openmp`).
    """
    if argv is None:
        _exec_with_passive_openmp()
    from tdbn.data import DataError
    from tdbn.messages import error, line, show_warnings_as_lines
    from tdbn.train import TrainingError

    args = build_parser().parse_args(argv)
    if argv is None:  # the program: warnings as one line each; a library caller keeps its own warning display
        show_warnings_as_lines(args.command)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe (`tdbn presets | head -3`) shows here, not at interpreter exit
        return code
    except (ValueError, FileNotFoundError, DataError, TrainingError, ImportError) as err:
        print(error(args.command, err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(line(args.command, "error", "interrupted"), file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading: not an error of ours, and nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process stopped by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
