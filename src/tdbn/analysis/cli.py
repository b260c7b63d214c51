"""``tdbn analyze WHAT ...``: the paper's analyses as commands, each writing ``<out>.json`` and ``<out>.png``.

WHAT is one of ``grad-norms`` (Fig. 2), ``membrane`` (Fig. 3), ``firing-rates`` (Fig. 4), ``spikes`` (Fig. 6),
``ops`` (Table 6), ``depth`` (accuracy against depth) and ``latency`` (accuracy against the number of time steps,
anytime prediction). ``src/tdbn/cli.py`` calls :func:`add_subparser`;
``python -m tdbn.analysis.cli WHAT ...`` runs the same commands on their own.

Output: ``--out PREFIX``; by default ``<run folder>/analysis/NAME`` for ``--checkpoint``, else ``runs/analysis/NAME``.
Existing files are never replaced unless ``--force`` is given (with ``--no-plot`` only the JSON file counts); this
is checked before any work, like every option. The paths written are printed. A bad option is one line
``tdbn analyze: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

DEFAULT_DIR = "runs/analysis"
SCHEDULES = ("constant", "cosine", "multistep")  # tdbn.analysis.training.SCHEDULES (not imported: a quick --help)


def _log(msg: str) -> None:
    print(msg, flush=True)


def _value(text: str) -> object:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _options(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE (e.g. --option width=0.5), got {pair!r}")
        out[key.strip()] = _value(val.strip())
    return out


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    named = ", MODEL = the model's name" if "MODEL" in default_out else ""
    p.add_argument("--out", default=None,
                   help=f"output prefix: writes PREFIX.json and PREFIX.png (default: {DEFAULT_DIR}/{default_out}, or "
                        f"<run folder>/analysis/{default_out} with --checkpoint{named})")
    p.add_argument("--force", action="store_true", help="replace PREFIX.json / PREFIX.png if they exist")
    p.set_defaults(default_out=default_out)
    p.add_argument("--no-plot", action="store_true", help="write the JSON only (no matplotlib needed)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)


def _data_args(p: argparse.ArgumentParser, dataset: str, size: int | None) -> None:
    p.add_argument("--dataset", choices=("cifar10", "mnist"), default=dataset)
    p.add_argument("--data-root", default=None,
                   help="data location (default: ../shared/data/cifar10-jpeg or ../shared/data/mnist/mnist.npz)")
    p.add_argument("--size", type=int, default=size, help="resize images to SIZE x SIZE (area averaging)")


def _model_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a tdbn train checkpoint (file or run folder): its model, weights and "
                                            "test data (--data-root overrides the recorded location)")
    which.add_argument("--model", help="registered model name (tdbn.models.names()), at initialization")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option for --model, repeatable (e.g. --option width=0.25 --option timesteps=6)")
    p.add_argument("--num-images", type=int, default=32, help="test images to run (default: %(default)s)")
    p.add_argument("--calibrate-norm", action="store_true",
                   help="set tdBN running statistics from the input batch first (for untrained models)")
    p.add_argument("--fuse", action="store_true", help="analyze tdbn.fuse(model), the fully-spiking network")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``analyze`` and its subcommands; each sets ``func`` returning an exit code."""
    p = subparsers.add_parser("analyze", help="reproduce the paper's analyses (figures 2-4, 6, table 6)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    q = sub.add_parser("membrane", help="Fig. 3: membrane potential vs pre-activation distributions")
    _common(q, "membrane")
    q.add_argument("--variances", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    q.add_argument("--tau", type=float, default=0.25)
    q.add_argument("--v-th", type=float, default=1.0)
    q.add_argument("--timesteps", type=int, default=8)
    q.add_argument("--neurons", type=int, default=10_000)
    q.set_defaults(func=_run_membrane)

    q = sub.add_parser("firing-rates", help="Fig. 4: firing-rate histograms for input variances")
    _common(q, "firing_rates")
    q.add_argument("--variances", type=float, nargs="+", default=[1 / 16, 1.0, 16.0])
    q.add_argument("--tau", type=float, default=0.25)
    q.add_argument("--v-th", type=float, default=1.0)
    q.add_argument("--timesteps", type=int, default=20)
    q.add_argument("--neurons", type=int, default=10_000)
    q.set_defaults(func=_run_firing_rates)

    q = sub.add_parser("grad-norms", help="Fig. 2: per-layer gradient norms of a plain net in early training")
    _common(q, "grad_norms")
    _data_args(q, "cifar10", None)
    q.add_argument("--per-class", type=int, default=400, help="training images per class (default: %(default)s)")
    q.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    q.add_argument("--norms", nargs="+", default=["tdbn", "bn", "none"], choices=("tdbn", "bn", "none"))
    q.add_argument("--depth", type=int, default=20)
    q.add_argument("--width", type=float, default=0.125)
    q.add_argument("--timesteps", type=int, default=4)
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--iterations", type=int, default=100)
    q.add_argument("--lr", type=float, default=0.1)
    q.set_defaults(func=_run_grad_norms)

    q = sub.add_parser("depth", help="accuracy against depth: plain / residual x tdBN / BN / none",
                       description="Train every (arch, depth, norm, seed) on the same batches and test it. Each "
                                   "net's result goes to its own file in --results-dir as it finishes; a rerun "
                                   "skips the nets already there (resume), --jobs trains nets in parallel.")
    _common(q, "depth_study")
    _data_args(q, "mnist", 14)
    q.add_argument("--per-class", type=int, default=2000, help="training images per class (default: %(default)s)")
    q.add_argument("--test-per-class", type=int, default=200)
    q.add_argument("--archs", nargs="+", default=["plain", "resnet"], choices=("plain", "resnet"))
    q.add_argument("--depths", type=int, nargs="+", default=[8, 14, 20, 34, 50])
    q.add_argument("--norms", nargs="+", default=["tdbn", "bn", "none"], choices=("tdbn", "bn", "none"))
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    q.add_argument("--width", type=float, default=0.125)
    q.add_argument("--timesteps", type=int, default=2)
    q.add_argument("--tau", type=float, default=0.25)
    q.add_argument("--batch-size", type=int, default=32)
    budget = q.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, default=None, help="SGD steps per net (default: 300)")
    budget.add_argument("--epochs", type=float, default=None,
                        help="budget in passes over the training images instead (rounded to whole iterations)")
    q.add_argument("--lr", type=float, default=0.1)
    q.add_argument("--momentum", type=float, default=0.9)
    q.add_argument("--weight-decay", type=float, default=0.0)
    q.add_argument("--schedule", type=_schedule, choices=SCHEDULES, default="constant",
                   help="learning rate over the budget, the training stack's optim.schedule: constant, cosine (to "
                        "0), or multistep (/10 at 1/2 and again at 3/4; formerly called step here)")
    q.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also test every N iterations; the final and the best-so-far accuracy are reported "
                        "separately (default: test at the end only)")
    q.add_argument("--grad-norms", nargs="+", default=[], metavar="ARCH-DEPTH-NORM",
                   help="nets whose per-layer gradient norms (Fig. 2) are recorded, e.g. resnet-50-tdbn")
    q.add_argument("--grad-norm-iterations", type=int, default=100,
                   help="iterations the gradient norms are averaged over, from the start (default: %(default)s)")
    q.add_argument("--results-dir", default=None,
                   help="one JSON per net, written when it finishes; nets already there are not retrained "
                        "(default: PREFIX_runs beside --out)")
    q.add_argument("--report-only", action="store_true",
                   help="train nothing: tables and plot of the nets already in --results-dir")
    q.add_argument("--jobs", type=int, default=1, help="worker processes training nets in parallel, each with "
                                                       "--threads torch threads (default 1 with --jobs > 1)")
    q.set_defaults(func=_run_depth)

    q = sub.add_parser("spikes", help="Fig. 6: average spikes per neuron in each layer over one inference")
    _common(q, "spikes_MODEL")
    _data_args(q, "cifar10", None)
    _model_args(q)
    q.set_defaults(func=_run_spikes)

    q = sub.add_parser("latency", help="anytime prediction: test accuracy after k = 1..T time steps")
    _common(q, "latency")
    q.add_argument("--checkpoint", required=True, help="a tdbn train checkpoint (file or run folder)")
    q.add_argument("--data-root", default=None, help="data folder (default: the one recorded in the checkpoint)")
    q.add_argument("--fuse", action="store_true", help="analyze tdbn.fuse(model), the fully-spiking network")
    q.add_argument("--limit", type=int, default=None, help="a fixed random subset of this many test samples")
    q.add_argument("--batch-size", type=int, default=None, help="test batch size (default: as tdbn eval)")
    q.add_argument("--stream", action="store_true",
                   help="also replay every test recording through tdbn.stream (event data; batch 1, slower)")
    q.set_defaults(func=_run_latency)

    q = sub.add_parser("ops", help="Table 6: ANN MACs vs measured SNN additions / multiplications, energy; "
                                       "also the counts in NeuroBench's convention")
    _common(q, "ops_MODEL")
    _data_args(q, "cifar10", None)
    _model_args(q)
    q.set_defaults(func=_run_ops)


def _prefix(args: argparse.Namespace, model: str | None = None, *, replace_ok: bool = False) -> str:
    """The output prefix: ``--out`` or the default; refuses to replace existing files without ``--force`` (unless
    ``replace_ok``: outputs rebuilt from results that are themselves never replaced)."""
    from pathlib import Path

    from .report import output_paths

    name = args.default_out.replace("MODEL", model or "model")
    if args.out is not None:
        prefix = args.out.replace("MODEL", model or "model")
    elif getattr(args, "checkpoint", None):
        ckpt = Path(args.checkpoint)
        prefix = str((ckpt if ckpt.is_dir() else ckpt.parent) / "analysis" / name)
    else:
        prefix = f"{DEFAULT_DIR}/{name}"
    js, png = output_paths(prefix)
    existing = [str(p) for p in ((js,) if args.no_plot else (js, png)) if p.exists()]  # the files it will write
    if existing and not (args.force or replace_ok):
        raise ValueError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force to "
                         "replace, or choose another --out")
    return prefix


def _wrote(prefix: str, args: argparse.Namespace) -> None:
    from .report import output_paths

    js, png = output_paths(prefix)
    _log(f"wrote {js}" + (f" and {png}" if not args.no_plot and png.exists() else ""))


def _setup(args: argparse.Namespace) -> None:
    """Checks of the options every analysis shares, then threads and seed: before any work."""
    import torch

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1 (torch CPU threads; omit it for torch's choice), got {args.threads}")
    for option in ("num_images", "jobs", "limit", "batch_size"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "option", None) and getattr(args, "checkpoint", None):
        raise ValueError("--option applies to --model only; a checkpoint carries its own model options")
    if not args.no_plot:  # a missing plotting extra is reported now, not after minutes of work
        from .plots import require_matplotlib

        require_matplotlib()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def _run_membrane(args: argparse.Namespace) -> int:
    from .figures import make_membrane

    _setup(args)
    out = _prefix(args)
    result = make_membrane(out, variances=args.variances, tau=args.tau, v_th=args.v_th,
                           timesteps=args.timesteps, neurons=args.neurons, seed=args.seed, plot=not args.no_plot)
    for p in result["panels"]:
        _log(f"x ~ N(0, {p['variance']:g}): var(x) {p['var_x']:.3f}, var(u) {p['var_u']:.3f}, "
             f"ratio {p['var_ratio_u_over_x']:.3f}")
    _wrote(out, args)
    return 0


def _run_firing_rates(args: argparse.Namespace) -> int:
    from .figures import make_firing_rates

    _setup(args)
    out = _prefix(args)
    result = make_firing_rates(out, variances=args.variances, tau=args.tau, v_th=args.v_th,
                               timesteps=args.timesteps, neurons=args.neurons, seed=args.seed,
                               plot=not args.no_plot)
    for p in result["panels"]:
        _log(f"x ~ N(0, {p['variance']:g}) {'held' if p['constant_input'] else 'iid'}: mean rate "
             f"{p['mean_rate']:.3f}, silent {p['silent_fraction']:.3f}, saturated {p['saturated_fraction']:.3f}")
    _wrote(out, args)
    return 0


def _run_grad_norms(args: argparse.Namespace) -> int:
    from .datasets import load_images
    from .figures import make_grad_norms
    from .grad_norms import grad_norm_study

    _setup(args)
    out = _prefix(args)
    x, y = load_images(args.dataset, args.data_root, train=True, limit_per_class=args.per_class, size=args.size)
    start = time.perf_counter()
    study = grad_norm_study(
        x, y, taus=args.taus, norms=args.norms, depth=args.depth, width=args.width, timesteps=args.timesteps,
        batch_size=args.batch_size, iterations=args.iterations, lr=args.lr, seed=args.seed, log=_log,
    )
    study.config.update(dataset=args.dataset, seconds=round(time.perf_counter() - start, 1))
    make_grad_norms(out, study, plot=not args.no_plot)
    _wrote(out, args)
    return 0


def _schedule(text: str) -> str:
    """``--schedule``: a former name is refused at once, naming its replacement (argparse checks the choices)."""
    from .training import RENAMED, check_schedule

    if text in RENAMED:
        try:
            check_schedule(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _grad_norm_net(text: str) -> tuple[str, int, str]:
    arch, _, rest = text.partition("-")
    depth, _, norm = rest.partition("-")
    if arch not in ("plain", "resnet") or not depth.isdigit() or norm not in ("tdbn", "bn", "none"):
        raise ValueError(f"--grad-norms expects ARCH-DEPTH-NORM (e.g. resnet-50-tdbn), got {text!r}")
    return arch, int(depth), norm


def _run_depth(args: argparse.Namespace) -> int:
    from .datasets import load_images
    from .depth import depth_study
    from .figures import make_depth, make_depth_grad_norms
    from .report import output_paths, write_json

    _setup(args)
    out = _prefix(args, replace_ok=True)  # the study's tables are rebuilt from the per-net files, kept as they are
    train = load_images(args.dataset, args.data_root, train=True, limit_per_class=args.per_class, size=args.size)
    test = load_images(args.dataset, args.data_root, train=False, limit_per_class=args.test_per_class,
                       size=args.size)
    if args.epochs is not None:
        iterations = max(1, round(args.epochs * (len(train[0]) // args.batch_size)))
    else:
        iterations = 300 if args.iterations is None else args.iterations
    js, _ = output_paths(out)
    results = args.results_dir if args.results_dir is not None else str(js.with_suffix("")) + "_runs"
    start = time.perf_counter()
    study = depth_study(
        train, test, archs=args.archs, depths=args.depths, norms=args.norms, seeds=args.seeds, width=args.width,
        timesteps=args.timesteps, batch_size=args.batch_size, iterations=iterations, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, tau=args.tau, schedule=args.schedule,
        eval_every=args.eval_every, grad_norm_nets=[_grad_norm_net(t) for t in args.grad_norms],
        grad_norm_iterations=args.grad_norm_iterations, results_dir=results, jobs=args.jobs,
        threads=args.threads, data_info={"dataset": args.dataset, "size": args.size},
        train_missing=not args.report_only, log=_log, on_run=lambda s: write_json(js, s.to_dict() | {"partial": True}),
    )
    study.config.update(results_dir=results, seconds_this_invocation=round(time.perf_counter() - start, 1))
    make_depth(out, study, plot=not args.no_plot)
    if any(r.grad_norms is not None for r in study.runs):
        make_depth_grad_norms(str(js.with_suffix("")) + "_grad_norms", study, plot=not args.no_plot)
    _wrote(out, args)
    _log(study.progress())
    _log("final test accuracy, running statistics:\n" + study.markdown_table(recalibrated=False))
    _log("final test accuracy, statistics recomputed:\n" + study.markdown_table(recalibrated=True))
    if args.eval_every:
        _log("best test accuracy over the evaluations, statistics recomputed:\n"
             + study.markdown_table(recalibrated=True, best=True))
    return 0


def _model_name(args: argparse.Namespace) -> str:
    """The analysed model's name, which names the output: ``--model``, or the one recorded in ``--checkpoint``
    (read now, so that an output that exists already is refused before any work)."""
    if getattr(args, "model", None):
        return args.model
    from ..train import saved_config

    return saved_config(args.checkpoint).model.name


def _model_and_inputs(args: argparse.Namespace):
    import torch

    from .. import fuse, models
    from .calibrate import calibrate_norm_stats
    from .checkpoints import load_for_analysis
    from .datasets import load_images

    if args.checkpoint is not None:
        model, x, meta = load_for_analysis(args.checkpoint, num_images=args.num_images, data_root=args.data_root)
    else:
        options = _options(args.option)
        per_class = max(1, -(-args.num_images // 10))
        x, _ = load_images(args.dataset, args.data_root, train=False, limit_per_class=per_class, size=args.size)
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.num_images]]
        options.setdefault("num_classes", 10)
        options.setdefault("in_channels", int(x.shape[1]))
        model = models.create(args.model, **options)
        meta = {"model": args.model, "options": options | {"timesteps": model.timesteps}, "dataset": args.dataset,
                "images": int(x.shape[0]), "input_shape": list(x.shape[1:]), "weights": "initialization (untrained)"}
    if args.calibrate_norm:
        calibrate_norm_stats(model, x)
    model.eval()
    if args.fuse:
        model = fuse(model)
    return model, x, meta | {"calibrated_norm": args.calibrate_norm, "fused": args.fuse}


def _run_spikes(args: argparse.Namespace) -> int:
    from .figures import make_spikes, spikes_title

    _setup(args)
    out = _prefix(args, _model_name(args))
    model, x, meta = _model_and_inputs(args)
    result = make_spikes(out, model, x, meta=meta, plot=not args.no_plot)
    _log(f"{spikes_title(result)} ({meta['weights']}):")
    for i, layer in enumerate(result["layers"], 1):
        _log(f"{i:3d} {layer['name']:<32} {layer['spikes_per_neuron']:.3f} spikes/neuron")
    _wrote(out, args)
    return 0


def _run_ops(args: argparse.Namespace) -> int:
    from .figures import make_ops

    _setup(args)
    out = _prefix(args, _model_name(args))
    model, x, meta = _model_and_inputs(args)
    make_ops(out, model, x, meta=meta, plot=not args.no_plot, log=_log)
    _wrote(out, args)
    return 0


def _run_latency(args: argparse.Namespace) -> int:
    from ..stream.run_dir import eval_batches, load_run
    from .latency import latency_curve, make_latency, markdown_table, stream_latency_curve

    _setup(args)
    out = _prefix(args, _model_name(args))
    run = load_run(args.checkpoint, fuse=args.fuse, data_root=args.data_root)
    cfg = run.config
    result = {"checkpoint": str(run.checkpoint), "epoch": run.epoch, "model": cfg.model.name,
              "dataset": cfg.data.name, "timesteps": cfg.model.timesteps, "fused": args.fuse}
    result |= latency_curve(run.model, eval_batches(run, batch_size=args.batch_size, limit=args.limit))
    if args.stream:
        result["stream"] = stream_latency_curve(run, limit=args.limit, log=_log)
        result["stream_equals_batched"] = result["stream"]["top1"] == result["top1"]
    make_latency(out, result, plot=not args.no_plot)
    _wrote(out, args)
    _log(markdown_table(result))
    if args.stream:
        _log(f"streamed {result['stream']['samples']} recordings, {result['stream']['ms_per_step']:.2f} ms/step; "
             f"same accuracy as the batched forward at every k: {result['stream_equals_batched']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``analyze WHAT ...`` without the rest of the tdbn CLI; a bad option raises (``ValueError`` naming it)."""
    parser = argparse.ArgumentParser(prog="python -m tdbn.analysis.cli")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # as `tdbn analyze ...`: one error line and exit code 2 for a bad option
    from ..data import DataError
    from ..messages import error
    from ..train import TrainingError

    try:
        code = main()
    except (ValueError, FileNotFoundError, DataError, TrainingError, ImportError) as err:
        print(error("analyze", err), file=sys.stderr)
        code = 2
    raise SystemExit(code)
