"""``tdbn export CHECKPOINT --format {nir,onnx} OUT``: fuse a trained checkpoint (Eq. 9-10) and write it out.

The model is rebuilt from the name and constructor arguments stored in the checkpoint (``tdbn.train.restore``, the
path ``tdbn eval`` and ``tdbn.load`` use), for the input shape it was trained on; ``--input-size`` changes the size
only for networks with a global pooling (the ImageNet ResNets). After writing, the file is read back (NIR:
``tdbn.export.from_nir``; ONNX: onnxruntime) and compared with the fused model on random inputs. The output's suffix
must match ``--format`` (``.nir`` / ``.onnx``; any other suffix is accepted with a note).
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
    p.set_defaults(func=run_export)


SUFFIXES = {"nir": (".nir",), "onnx": (".onnx",)}


def _model_from_checkpoint(path: str, input_size: int | None) -> tuple[Any, bool, int]:
    """``(model in eval mode, events?, input size)`` rebuilt from a training checkpoint."""
    from tdbn.train.restore import restore

    run = restore(path, lif_backend="torch")  # a kernel choice, not part of the trained network
    size = run.input_shape[1]
    if input_size is not None and input_size != size:
        if run.sized:
            raise ValueError(f"--input-size {input_size}: this {run.config.model.name} was built for {size}x{size} "
                             f"inputs (its fc layer depends on the size); omit --input-size or pass {size}")
        size = input_size
    return run.model, run.events, int(size)


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
    if args.dt is not None and args.format != "nir":
        raise ValueError("--dt applies to --format nir only (ONNX unrolls the T steps; it has no time step)")
    model, events, size = _model_from_checkpoint(args.checkpoint, args.input_size)
    shape = (model.in_channels, size, size)
    gen = torch.Generator().manual_seed(0)
    if events:  # event frames [T, N, C, H, W]
        x = (torch.rand(model.timesteps, 4, *shape, generator=gen) > 0.8).float()
    else:  # static images [N, C, H, W]
        x = torch.rand(4, *shape, generator=gen)
    with torch.no_grad():
        ref = fuse(model)(x)
    if args.format == "nir":
        from tdbn.export import DEFAULT_DT, from_nir, write_nir

        graph = write_nir(model, out, input_shape=shape, dt=args.dt if args.dt is not None else DEFAULT_DT)
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
    print(f"wrote {out} ({args.format}, {detail}); input {'[T, N, ' if events else '[N, '}"
          f"{', '.join(map(str, shape))}]; read back: max |output - fused model| = {diff:.3g} on "
          f"{tuple(x.shape)} random inputs")
    if not torch.allclose(back, ref, atol=1e-4):
        print(line("export", "error", f"{out} does not reproduce the fused model (max difference {diff:.3g})"),
              file=sys.stderr)
        return 1
    return 0
