"""Quantization-aware fine-tuning (``tdbn finetune``): continue a trained run as its K-bit integer network.

:func:`finetune` restores a run, fuses it (Eq. 9-10), and trains the fused network's weights and biases for a few
epochs through :class:`tdbn.export.qat.FakeQuantNet`, whose forward pass is the integer network that
:func:`tdbn.export.quantize` makes of them (same scales, integer thresholds, input quantization), with a
straight-through gradient. It writes a NEW run folder (the source run is only read) whose checkpoint holds the
fine-tuned fused network (``"fused": true``, so :func:`~tdbn.train.restore.restore` rebuilds it as such) and the
settings it was fine-tuned for (``"quantization"``). ``tdbn eval NEW --bits K`` and ``tdbn export NEW out.nir
--bits K`` then quantize it to exactly the integer network that was trained: its test accuracy is the one this
command reports.

The run folder: ``config.yaml`` / ``config.json`` (the source's configuration with this fine-tuning's optimizer,
batch size and data settings), ``metrics.jsonl`` (one line per epoch, plus the integer accuracy before fine-tuning
as epoch 0), ``checkpoint.pt``. SGD with the source's momentum, no weight decay (the fused weights carry tdBN's
scales), a cosine schedule over the fine-tuning epochs, fp32 on the CPU, one process.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data import DataNotFoundError
from ..fusion import fuse
from ..messages import warn
from ..train.amp import Precision
from ..train.checkpoint import CHECKPOINT, FORMAT, checkpoint_digest, code_version, get_rng_state, save_checkpoint
from ..train.config import config_to_dict, save_config
from ..train.data import build_data
from ..train.distributed import Context
from ..train.engine import train_one_epoch
from ..train.errors import TrainingError
from ..train.loaders import Shard
from ..train.metrics_log import MetricsLog
from ..train.optim import build_scheduler
from ..train.restore import checkpoint_file, restore

__all__ = ["finetune", "check_bits"]

LR = 0.01  # default fine-tuning learning rate (a tenth of the paper's initial 0.1: the network is trained)


def check_bits(bits: int, input_bits: int) -> None:
    """``ValueError`` for widths the integer network cannot have (the same range as ``tdbn eval --bits``)."""
    if not 2 <= bits <= 16:
        raise ValueError(f"--bits must be 2..16 (signed integer weights), got {bits}")
    if not 2 <= input_bits <= 16:
        raise ValueError(f"--input-bits must be 2..16 (signed integer inputs), got {input_bits}")


def _check_args(source: Path, out: Path, *, bits: int, input_bits: int, epochs: int, lr: float,
                batch_size: int | None, train_limit: int | None) -> None:
    """Every bad argument, before anything is read or trained."""
    check_bits(bits, input_bits)
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number, got {lr}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"--train-limit must be >= 1 sample, got {train_limit}")
    ckpt = checkpoint_file(source)  # an unknown run is reported here, naming what the path is instead
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"--out {out}: already exists and is not an empty folder; fine-tuning writes a new run "
                            "folder (the source run is never changed): name another")
    if out.resolve() == ckpt.parent.resolve():
        raise TrainingError(f"--out {out} is the source run's folder; fine-tuning writes a new run folder")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist; create it or name another")


def finetune(
    source: str | Path, out: str | Path, *, bits: int, per_channel: bool = False, input_bits: int = 8,
    epochs: int = 1, lr: float = LR, batch_size: int | None = None, train_limit: int | None = None,
    data_root: str | None = None, threads: int | None = None, progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tune the run ``source`` (folder or checkpoint) for ``bits``-bit integer deployment into the new run
    folder ``out`` (module docstring); returns the last epoch's metrics record (``test_top1``: the integer
    network's top-1 on the run's test split, ``test_top1_before``: before fine-tuning).

    ``per_channel`` / ``input_bits``: as ``tdbn.export.quantize``. ``batch_size`` (default: the source's),
    ``train_limit`` (a fixed random subset of the training split) and ``data_root`` (where the data has moved)
    change what it trains on; ``threads`` sets torch's CPU threads.
    """
    from .qat import FakeQuantNet
    from .quant_eval import input_scale_of

    source, out = Path(source), Path(out)
    _check_args(source, out, bits=bits, input_bits=input_bits, epochs=epochs, lr=lr, batch_size=batch_size,
                train_limit=train_limit)
    if threads is not None:
        torch.set_num_threads(threads)
    run = restore(source)
    scale = input_scale_of(run, input_bits=input_bits)
    cfg = copy.deepcopy(run.config)
    if data_root is not None:
        cfg.data.root = str(Path(data_root).expanduser().resolve())
    if train_limit is not None:
        cfg.data.train_limit = train_limit
    bs = batch_size or cfg.optim.batch_size
    cfg.optim.epochs, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.weight_decay = epochs, float(lr), bs, 0.0
    cfg.optim.schedule, cfg.optim.warmup_epochs = "cosine", 0.0
    cfg.run_dir, cfg.threads, cfg.device, cfg.amp = str(out), threads, "cpu", "fp32"
    model = fuse(run.model.float())  # the network to train; its integer form now (a decay that is no shift: refused)
    net = FakeQuantNet(model, bits=bits, input_shape=run.input_shape, input_scale=scale, per_channel=per_channel,
                       input_bits=input_bits)
    torch.manual_seed(cfg.seed)
    try:
        data = build_data(cfg.data, batch_size=bs, timesteps=cfg.model.timesteps, seed=cfg.seed,
                          eval_batch_size=2 * bs, log=log)
    except DataNotFoundError as err:
        if data_root is not None:
            raise
        raise DataNotFoundError(err.path, expected=err.expected, problem=err.problem,
                                source=f"{err.source}\n(the data location recorded in the run; pass --data ROOT to "
                                       "use another)") from None
    if len(data.train) == 0:
        raise TrainingError(f"{data.train.num_samples} training samples make no batch of {bs}; lower --batch-size")
    ctx, precision = Context(Shard(), torch.device("cpu")), Precision.create("fp32", torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.optim.momentum)
    scheduler = build_scheduler(optimizer, cfg.optim, len(data.train))
    kind = f"{bits}-bit{' per-channel' if per_channel else ''}"
    log(f"fine-tuning {run.path} ({cfg.model.name}, epoch {run.epoch}) as its {kind} integer network: "
        f"{epochs} epoch(s) of {data.train.num_samples} samples, batch {bs}, lr {lr:g} (cosine); "
        f"{data.test.num_samples} test samples")
    start = time.perf_counter()
    before = _evaluate(net, data.test)
    log(f"before fine-tuning: {kind} integer top-1 {100 * before['top1']:.2f}%")
    out.mkdir(exist_ok=True)
    save_config(cfg, out)
    metrics = MetricsLog(out)
    history: list[dict[str, Any]] = [{"epoch": 0, "test_loss": before["loss"], "test_top1": before["top1"],
                                      "elapsed_s": time.perf_counter() - start}]
    metrics.append(history[0])
    quantization = {"bits": int(bits), "per_channel": bool(per_channel), "input_bits": int(input_bits),
                    "input_scale": net.net.input_scale, "source": str(run.path),
                    "source_sha256": checkpoint_digest(run.path), "source_epoch": run.epoch,
                    "test_top1_before": before["top1"]}
    spec = {"model_name": run.model_name, "model_kwargs": run.model_kwargs,
            "input": {"events": run.events, "shape": list(run.input_shape)}}
    record: dict[str, Any] = {}
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        tr = train_one_epoch(net, data.train, optimizer, scheduler, precision, ctx, epoch=epoch, epochs=epochs,
                             progress=progress)
        te = _evaluate(net, data.test)
        record = {"epoch": epoch + 1, "lr": tr["lr"], "train_loss": tr["loss"], "train_top1": tr["top1"],
                  "train_top5": tr["top5"], "images_per_s": tr["images_per_s"], "epoch_s": tr["seconds"],
                  "test_loss": te["loss"], "test_top1": te["top1"],
                  "test_top1_before": before["top1"], "elapsed_s": time.perf_counter() - start}
        history.append(record)
        metrics.append(record)
        save_checkpoint(out / CHECKPOINT, {
            "format": FORMAT, "epoch": epoch + 1, "model": model.state_dict(), **spec,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": precision.scaler.state_dict(), "rng": get_rng_state(), "config": config_to_dict(cfg),
            "neuron": run.checkpoint.get("neuron", {}), "metrics": history, "version": code_version(),
            "world_size": 1, "fused": True, "quantization": quantization,
        })
        log(f"epoch {epoch + 1}/{epochs}  lr {tr['lr']:.3g}  loss {tr['loss']:.4f}  train {100 * tr['top1']:.2f}%  "
            f"{kind} integer test {100 * te['top1']:.2f}%  {record['elapsed_s']:.0f}s")
    metrics.close()
    _check_deployed(net)
    log(f"{kind} integer top-1: {100 * record['test_top1']:.2f}% (before fine-tuning {100 * before['top1']:.2f}%; "
        f"{data.test.num_samples} test samples); run folder: {out} (tdbn eval {out} --bits {bits}"
        f"{' --per-channel' if per_channel else ''})")
    return record


@torch.no_grad()
def _evaluate(net: torch.nn.Module, loader: Any) -> dict[str, float]:
    """Loss (Eq. 12) and top-1 of the integer network on ``loader``; top-1 by ``argmax`` of the scores, as
    ``tdbn eval --bits`` counts it (integer scores tie between classes now and then: the first class wins)."""
    net.eval()
    loss = correct = n = 0.0
    for x, y in loader:
        scores = net(x.float())
        loss += float(torch.nn.functional.cross_entropy(scores.float(), y, reduction="sum"))
        correct += int((scores.argmax(1) == y).sum())
        n += int(y.shape[0])
    return {"loss": loss / max(n, 1), "top1": correct / max(n, 1)}


def _check_deployed(net: Any) -> None:
    """Warn if :func:`tdbn.export.quantize` of the fine-tuned model is not the integer network that was trained
    (it is by construction: the same functions on the same float64 values)."""
    net.eval()
    with torch.no_grad():
        net.integers()
    deployed = net.integer_net()
    differ = [name for name, node in deployed.nodes.items() if node.weight is not None and not (
        torch.equal(node.weight, net.net.nodes[name].weight) and torch.equal(node.bias, net.net.nodes[name].bias))]
    differ += [name for name, node in deployed.nodes.items()
               if node.kind == "lif" and not torch.equal(node.theta, net.net.nodes[name].theta)]
    if differ:  # pragma: no cover - would be a bug
        warn(f"the integer network of the fine-tuned model differs from the trained one at {differ[:3]}")
