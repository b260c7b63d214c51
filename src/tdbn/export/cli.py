"""``tdbn export CHECKPOINT --format {nir,onnx} OUT``: fuse a trained checkpoint (Eq. 9-10) and write it out.

The model is rebuilt from the configuration stored in the checkpoint; its input channels and number of classes are
read from the saved weights. The input size comes from ``--input-size``, else from the configuration, else from the
data set named in the configuration (which must then be present). After writing, the file is read back (NIR:
``tdbn.export.from_nir``; ONNX: onnxruntime) and compared with the fused model on random inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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


def _model_from_checkpoint(path: str, input_size: int | None) -> tuple[Any, bool, int]:
    """``(model in eval mode, events?, input size)`` rebuilt from a training checkpoint."""
    from tdbn.train import config_from_dict, load_checkpoint
    from tdbn.train.build import build_model
    from tdbn.train.data import EVENT_DATASETS

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    state = ckpt["model"]
    try:
        in_channels = int(state["encoder.conv.module.weight"].shape[1])
        num_classes = int(state["decoder.module.weight"].shape[0])
    except KeyError as e:
        raise ValueError(f"{path}: the saved model has no {e} weight; tdbn export handles tdbn.models networks") from e
    size = input_size or cfg.model.options.get("input_size")
    if size is None:
        from tdbn.train.data import build_data

        try:
            data = build_data(cfg.data, batch_size=1, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}\n(the input size comes from the data set; or pass --input-size H)") from e
        size = data.input_size
    cfg.model.lif_backend = "torch"  # a kernel choice, not part of the trained network: export runs on the CPU
    model = build_model(cfg.model, num_classes=num_classes, in_channels=in_channels, input_size=int(size))
    model.load_state_dict(state)
    return model.eval(), cfg.data.name in EVENT_DATASETS, int(size)


def run_export(args: argparse.Namespace) -> int:
    import torch

    from tdbn.export import fuse

    model, events, size = _model_from_checkpoint(args.checkpoint, args.input_size)
    shape = (model.in_channels, size, size)
    out = Path(args.out)
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
        if args.dt is not None:
            raise ValueError("--dt applies to --format nir only (ONNX unrolls the T steps; it has no time step)")
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
        print(f"tdbn export: error: {out} does not reproduce the fused model (max difference {diff:.3g})",
              file=sys.stderr)
        return 1
    return 0
