"""The integer network of a training checkpoint, and its accuracy on the run's test set (``tdbn eval --bits K``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .quant import INPUT_BITS, IntegerNet, image_input_scale, quantize


def integer_from_checkpoint(
    path: str | Path, *, bits: int, per_channel: bool = False, input_bits: int = INPUT_BITS
) -> tuple[IntegerNet, Any]:
    """``(IntegerNet, tdbn.train.restore.Restored)`` of a checkpoint file or run folder.

    The input scale comes from the run's normalization (static images: :func:`image_input_scale` of the stored
    ``data.options`` mean / std); event frames are taken as integer counts (scale 1).
    """
    from tdbn.train.restore import restore

    run = restore(path, lif_backend="torch")
    opts = run.config.data.options
    if run.events:
        scale = 1.0
    elif "mean" in opts and "std" in opts:
        scale = image_input_scale(opts["mean"], opts["std"], input_bits=input_bits)
    else:
        raise ValueError(f"{run.path}: the run stores no input normalization (data.options mean/std), so the "
                         "8-bit input range is unknown; quantize it in Python with "
                         "tdbn.export.quantize(input_scale=...)")
    net = quantize(run.model, bits=bits, input_shape=run.input_shape, input_scale=scale, per_channel=per_channel,
                   input_bits=input_bits)
    return net, run


@torch.no_grad()
def evaluate_integer(
    path: str | Path, *, bits: int, data_root: str | None = None, test_limit: int | None = None,
    per_channel: bool = False, input_bits: int = INPUT_BITS, batch_size: int = 100,
) -> dict[str, Any]:
    """Top-1 of the integer network (int64 simulation) and of the float model on the same test samples."""
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
    correct_int = correct_float = agree = n = 0
    start = time.perf_counter()
    for x, y in data.test:
        x = x.float()
        pred_int = net.scores(x).argmax(1)
        pred_float = run.model(x).argmax(1)
        correct_int += int((pred_int == y).sum())
        correct_float += int((pred_float == y).sum())
        agree += int((pred_int == pred_float).sum())
        n += int(y.shape[0])
    return {
        "checkpoint": str(run.path), "model": cfg.model.name, "data": cfg.data.name, "bits": int(bits),
        "per_channel": per_channel, "input_bits": input_bits if not run.events else None,
        "input_scale": net.input_scale, "top1_integer": correct_int / n, "top1_float": correct_float / n,
        "same_predictions": agree / n, "samples": n, "seconds": time.perf_counter() - start,
    }
