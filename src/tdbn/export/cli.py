"""``tdbn export CHECKPOINT --format {nir,onnx} OUT``: fuse a trained checkpoint (Eq. 9-10) and write it out.

The model is rebuilt from the name and constructor arguments stored in the checkpoint (``tdbn.train.restore``, the
path ``tdbn eval`` and ``tdbn.load`` use), for the input shape it was trained on; ``--input-size`` changes the size
only for networks with a global pooling (the ImageNet ResNets). After writing, the file is read back (NIR:
``tdbn.export.from_nir``; ONNX: onnxruntime) and compared with the fused model on the first test samples of the
run's data (``--data ROOT`` where it has moved); where that data cannot be read, on random inputs, and the printed
line says so. The output's suffix must match ``--format`` (``.nir`` / ``.onnx``; any other suffix is accepted with a
note).

NIR is written in the portable form (LIF ``r = 1``, pooling as a sum-pooling Conv2d; ``--literal``: the literal
form). ``--bits K`` writes the K-bit integer network instead (``tdbn.export.quant``) and checks that ``from_nir``
gives the int64 simulation's spikes bit for bit on those inputs. docs/export.md has the details.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..messages import line

FORMATS = ("nir", "onnx")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tdbn export``."""
    p = subparsers.add_parser(
        "export", help="fuse a checkpoint (Eq. 9-10) and write it as NIR or ONNX",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint file or run folder (from tdbn train)")
    p.add_argument("out", help="file to write, e.g. model.nir or model.onnx")
    p.add_argument("--format", required=True, choices=FORMATS, help="nir (neuromorphic exchange) or onnx")
    p.add_argument("--input-size", type=int, metavar="H",
                   help="input height = width (default: from the checkpoint's configuration or data set)")
    p.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                   help="NIR: simulation time step every LIF is mapped for (default 1e-4, snnTorch's step)")
    p.add_argument("--literal", action="store_true",
                   help="NIR: write LIF r = 1/(1-tau) and AvgPool2d (bit-identical in tdbn's from_nir; not portable)")
    p.add_argument("--bits", type=int, metavar="K",
                   help="NIR: write the K-bit integer network (integer weights, biases, thresholds; docs/export.md)")
    p.add_argument("--per-channel", action="store_true", help="with --bits: one scale per output channel")
    p.add_argument("--data", metavar="ROOT",
                   help="data folder of the test samples the written file is checked on (default: the run's)")
    p.set_defaults(func=run_export)


CHECK_SAMPLES = 16  # test samples the written file is checked on


def _check_inputs(run: Any, data_root: str | None, *, static_shape: tuple[int, ...]) -> tuple[Any, str]:
    """``(inputs, what they are)``: the first :data:`CHECK_SAMPLES` of the run's fixed random test subset, or, where
    the run's data cannot be read, 4 random inputs and a description that says so."""
    import copy

    import torch

    from tdbn.data import DataError
    from tdbn.train.data import build_data

    cfg = copy.deepcopy(run.config.data)
    if data_root is not None:
        cfg.root = data_root
    cfg.test_limit = CHECK_SAMPLES
    try:
        data = build_data(cfg, batch_size=CHECK_SAMPLES, timesteps=run.config.model.timesteps, seed=run.config.seed,
                          train=False)
        x, _ = next(iter(data.test))
        where = f" in {cfg.root}" if cfg.root else ""
        return x.float(), f"{CHECK_SAMPLES} test samples of {cfg.name}{where}"
    except (DataError, OSError) as err:
        why = str(err).partition("\n")[0]
    gen = torch.Generator().manual_seed(0)
    if run.events:  # event frames [T, N, C, H, W]
        x = (torch.rand(run.model.timesteps, 4, *static_shape, generator=gen) > 0.8).float()
    else:  # static images [N, C, H, W]
        x = torch.randn(4, *static_shape, generator=gen)
    return x, f"4 random inputs: the run's {cfg.name} data cannot be read ({why}); pass --data ROOT to check on it"


SUFFIXES = {"nir": (".nir",), "onnx": (".onnx",)}


def _model_from_checkpoint(path: str, input_size: int | None) -> tuple[Any, int]:
    """``(restored run, its model in eval mode; input size)`` rebuilt from a training checkpoint."""
    from tdbn.train.restore import restore

    run = restore(path)
    size = run.input_shape[1]
    if input_size is not None and input_size != size:
        if run.sized:
            raise ValueError(f"--input-size {input_size}: this {run.config.model.name} was built for {size}x{size} "
                             f"inputs (its fc layer depends on the size); omit --input-size or pass {size}")
        size = input_size
    return run, int(size)


def _check_suffix(out: Path, fmt: str) -> None:
    other = {s for f, suffixes in SUFFIXES.items() if f != fmt for s in suffixes}
    if out.suffix.lower() in other:
        raise ValueError(f"{out}: the suffix {out.suffix} says {out.suffix[1:].upper()} but --format is {fmt}; "
                         f"name the file {out.with_suffix(SUFFIXES[fmt][0]).name} or pass the matching --format")


def _require(module: str, extra: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ImportError(f"tdbn export --format {'nir' if extra == 'export' else 'onnx'} needs the {module} "
                          f"package: pip install 'tdbn[{extra}]'") from None


def run_export(args: argparse.Namespace) -> int:
    import torch

    from tdbn.export import fuse

    out = Path(args.out)
    _check_suffix(out, args.format)
    if args.format == "onnx":
        _require("onnx", "onnx")
        _require("onnxruntime", "onnx")
    else:
        _require("nir", "export")
    if args.format != "nir":
        for flag, value in (("--dt", args.dt), ("--bits", args.bits), ("--literal", args.literal or None),
                            ("--per-channel", args.per_channel or None)):
            if value is not None:
                raise ValueError(f"{flag} applies to --format nir only (ONNX unrolls the T steps in float)")
    if args.per_channel and args.bits is None:
        raise ValueError("--per-channel applies to the integer network: pass --bits K too")
    if args.bits is not None:
        return _export_integer(args, out)
    run, size = _model_from_checkpoint(args.checkpoint, args.input_size)
    model, events = run.model, run.events
    shape = (model.in_channels, size, size)
    if size == run.input_shape[1]:
        x, inputs = _check_inputs(run, args.data, static_shape=shape)
    else:  # another input size than the data's
        x = torch.rand(model.timesteps, 4, *shape) > 0.8 if events else torch.randn(4, *shape)
        x, inputs = x.float(), f"4 random {size}x{size} inputs (the run's data are {run.input_shape[1]}x" \
                               f"{run.input_shape[1]})"
    with torch.no_grad():
        ref = fuse(model)(x)
    if args.format == "nir":
        from tdbn.export import DEFAULT_DT, from_nir, write_nir

        graph = write_nir(model, out, input_shape=shape, dt=args.dt if args.dt is not None else DEFAULT_DT,
                          portable=not args.literal)
        with torch.no_grad():
            back = from_nir(out)(x)
        detail = f"{len(graph.nodes)} nodes, {len(graph.edges)} edges, dt={graph.metadata['dt']}"
    else:
        import onnxruntime as ort

        from tdbn.export.onnx import to_onnx

        to_onnx(model, out, x[:, :1] if events else x[:1])
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        back = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        detail = f"T={model.timesteps} unrolled"
    diff = float((back - ref).abs().max())
    if args.format == "nir" and not args.literal:
        # portable form: the folded gain changes float rounding, so a potential within rounding of the threshold
        # can flip a spike; the predictions must agree
        same = int((back.argmax(1) == ref.argmax(1)).sum())
        detail += f"; {same}/{len(ref)} identical predictions"
        if same != len(ref):
            print(f"tdbn export: error: {out} changes {len(ref) - same} of {len(ref)} predictions", file=sys.stderr)
            return 1
        ref = back  # checked above
    print(f"wrote {out} ({args.format}, {detail}); input {'[T, N, ' if events else '[N, '}"
          f"{', '.join(map(str, shape))}]; read back: max |output - fused model| = {diff:.3g} on {inputs}")
    if not torch.allclose(back, ref, atol=1e-4):
        print(line("export", "error", f"{out} does not reproduce the fused model (max difference {diff:.3g})"),
              file=sys.stderr)
        return 1
    return 0


def _export_integer(args: argparse.Namespace, out: Path) -> int:
    """``--bits K``: write the integer network as NIR, read it back, check its spikes against the int64 simulation."""
    import torch

    from tdbn.export import DEFAULT_DT, from_nir
    from tdbn.export.nir import write_graph
    from tdbn.export.quant_eval import integer_from_checkpoint

    _require("nir", "export")
    if args.input_size is not None:
        raise ValueError("--input-size: the integer network is built for the checkpoint's input size; omit it")
    net, run = integer_from_checkpoint(args.checkpoint, bits=args.bits, per_channel=args.per_channel)
    graph = write_graph(net.to_nir(dt=args.dt if args.dt is not None else DEFAULT_DT, portable=not args.literal), out)
    detail = f"{len(graph.nodes)} nodes, {args.bits}-bit weights, input scale {net.input_scale:.6g}"
    if args.per_channel:  # thresholds differ between neurons: tdbn's LIF (and snnTorch's) has one per layer
        print(f"wrote {out} (integer NIR, {detail}, per-channel thresholds: not read back)")
        return 0
    x, inputs = _check_inputs(run, args.data, static_shape=run.input_shape)
    ints = net.forward_nodes(x)
    with torch.no_grad():
        back = from_nir(out).forward_nodes(net.quantize_input(x).float())
    lifs = [n for n, node in net.nodes.items() if node.kind == "lif"]
    differ = [n for n in lifs if not torch.equal(back[n], ints[n].float())]
    print(f"wrote {out} (integer NIR, {detail}); read back: {len(lifs) - len(differ)}/{len(lifs)} LIF layers with "
          f"bit-identical spikes to the integer simulation on {inputs}")
    if differ:
        print(f"tdbn export: error: spikes differ at {differ[:3]}", file=sys.stderr)
        return 1
    return 0


def run_eval_bits(args: argparse.Namespace) -> dict[str, Any]:
    """``tdbn eval --bits K``: the integer network's top-1 beside the float model's, on the same test samples;
    printed and returned (``tdbn eval`` writes it, after checking its options and its output file)."""
    from tdbn.export.quant_eval import evaluate_integer

    result = evaluate_integer(args.checkpoint, bits=args.bits, data_root=args.data, test_limit=args.limit,
                              per_channel=args.per_channel, input_bits=args.input_bits,
                              batch_size=args.batch_size or 100)
    print(f"{result['checkpoint']}: {args.bits}-bit integer top-1 {100 * result['top1_integer']:.2f}%  float "
          f"{100 * result['top1_float']:.2f}%  same predictions {100 * result['same_predictions']:.2f}%  "
          f"({result['samples']} test samples, {result['seconds']:.0f} s: integer network "
          f"{result['seconds_integer']:.1f} s, float {result['seconds_float']:.1f} s)")
    return result
