"""The integer network of a training checkpoint, and its accuracy on the run's test set (``tdbn eval --bits K``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..messages import warn
from .quant import INPUT_BITS, IntegerNet, image_input_scale, quantize


def integer_from_checkpoint(
    path: str | Path, *, bits: int, per_channel: bool = False, input_bits: int = INPUT_BITS
) -> tuple[IntegerNet, Any]:
    """``(IntegerNet, tdbn.train.restore.Restored)`` of a checkpoint file or run folder.

    The input scale comes from the run's normalization (static images: :func:`image_input_scale` of the stored
    ``data.options`` mean / std); event frames are taken as integer counts (scale 1).
    """
    from tdbn.train.restore import restore

    run = restore(path)
    scale = input_scale_of(run, input_bits=input_bits)
    tuned = run.checkpoint.get("quantization")  # a run of tdbn finetune: fine-tuned for one integer network
    if tuned and (tuned["bits"], tuned["per_channel"], tuned["input_bits"]) != (bits, per_channel, input_bits):
        warn(f"{run.path} was fine-tuned for {_kind(tuned['bits'], tuned['per_channel'], tuned['input_bits'])} "
             f"integers (tdbn finetune); this is the {_kind(bits, per_channel, input_bits)} network of its weights")
    net = quantize(run.model, bits=bits, input_shape=run.input_shape, input_scale=scale, per_channel=per_channel,
                   input_bits=input_bits)
    return net, run


def _kind(bits: int, per_channel: bool, input_bits: int) -> str:
    return f"{bits}-bit{' per-channel' if per_channel else ''}" + (f", {input_bits}-bit input" if input_bits != 8
                                                                   else "")


def input_scale_of(run: Any, *, input_bits: int = INPUT_BITS) -> float:
    """The real value of one unit of the quantized input of a restored run (``tdbn.train.restore.Restored``):
    :func:`image_input_scale` of its stored normalization for images, 1 for event frames (integer counts)."""
    opts = run.config.data.options
    if run.events:
        return 1.0
    if "mean" in opts and "std" in opts:
        return image_input_scale(opts["mean"], opts["std"], input_bits=input_bits)
    raise ValueError(f"{run.path}: the run stores no input normalization (data.options mean/std), so the "
                     "8-bit input range is unknown; quantize it in Python with "
                     "tdbn.export.quantize(input_scale=...)")


@torch.no_grad()
def evaluate_integer(
    path: str | Path, *, bits: int, data_root: str | None = None, test_limit: int | None = None,
    per_channel: bool = False, input_bits: int = INPUT_BITS, batch_size: int = 100,
) -> dict[str, Any]:
    """Top-1 of the integer network and of the float model (fused, Eq. 9-10) on the same test samples.

    The integer network runs :meth:`IntegerNet.scores`: the int64 simulation's integers bit for bit, on float32
    kernels where that is provably exact (``tdbn.export.quant_fast``). The float model runs channels-last (its
    convolutions are several times faster so on the CPU; the same network). ``seconds_integer`` and
    ``seconds_float`` time each, ``seconds`` the whole loop with the data; ``integer_layers_off_float32`` names the
    layers whose bound put them in float64 or int64.
    """
    from tdbn.fusion import fuse
    from tdbn.train.data import build_data

    if test_limit is not None and test_limit < 1:
        raise ValueError(f"the test limit must be >= 1 sample, got {test_limit} (omit --limit for the whole split)")
    net, run = integer_from_checkpoint(path, bits=bits, per_channel=per_channel, input_bits=input_bits)
    cfg = run.config
    if data_root is not None:
        cfg.data.root = data_root
    if test_limit is not None:
        cfg.data.test_limit = test_limit
    data = build_data(cfg.data, batch_size=batch_size, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
    model = fuse(run.model).to(memory_format=torch.channels_last)
    correct_int = correct_float = agree = n = 0
    seconds_int = seconds_float = 0.0
    start = time.perf_counter()
    for x, y in data.test:
        x = x.float()
        t0 = time.perf_counter()
        pred_int = net.scores(x).argmax(1)
        t1 = time.perf_counter()
        pred_float = model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x).argmax(1)
        t2 = time.perf_counter()
        seconds_int, seconds_float = seconds_int + t1 - t0, seconds_float + t2 - t1
        correct_int += int((pred_int == y).sum())
        correct_float += int((pred_float == y).sum())
        agree += int((pred_int == pred_float).sum())
        n += int(y.shape[0])
    return {
        "checkpoint": str(run.path), "model": cfg.model.name, "data": cfg.data.name, "bits": int(bits),
        "per_channel": per_channel, "input_bits": input_bits if not run.events else None,
        "input_scale": net.input_scale, "top1_integer": correct_int / n, "top1_float": correct_float / n,
        "same_predictions": agree / n, "samples": n, "seconds": time.perf_counter() - start,
        "seconds_integer": seconds_int, "seconds_float": seconds_float,
        "integer_layers_off_float32": {name: k for (name, k) in sorted(net.kernel_counts) if k != "float32"},
    }
