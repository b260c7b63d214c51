"""Size a run to a wall-clock budget: measure training throughput, choose the epochs, train."""

from __future__ import annotations

import copy
import time
from typing import Any, NamedTuple

import torch

from tdbn.train.amp import Precision, resolve_amp
from tdbn.train.build import build_model
from tdbn.train.config import TrainConfig
from tdbn.train.data import build_data
from tdbn.train.distributed import resolve_device
from tdbn.train.optim import build_optimizer
from tdbn.train.run import train

__all__ = ["Throughput", "epochs_for_budget", "train_for_budget", "train_throughput"]


class Throughput(NamedTuple):
    samples_per_s: float
    train_samples: int  # per epoch


def train_throughput(cfg: TrainConfig, *, steps: int = 10, warmup: int = 3) -> Throughput:
    """Training samples per second of ``cfg`` in this process (a throw-away model, ``steps`` timed steps)."""
    cfg = copy.deepcopy(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data = build_data(cfg.data, batch_size=cfg.optim.batch_size, timesteps=cfg.model.timesteps, seed=cfg.seed,
                      device=device)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels,
                        input_size=data.input_size).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    precision = Precision.create(resolve_amp(cfg.amp, device), device)
    model.train()
    done, start = 0, 0.0
    for i, (x, y) in enumerate(data.train):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + steps:
            break
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(model(x.to(device)).float(), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        precision.backward_step(loss, optimizer)
        done += y.shape[0] if i >= warmup else 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Throughput(done / (time.perf_counter() - start), data.train.num_samples)


def epochs_for_budget(speed: Throughput, *, minutes: float, reserve: float = 0.1) -> int:
    """Whole epochs that fit in ``minutes`` at the measured speed, keeping the fraction ``reserve`` for evaluation.

    >>> epochs_for_budget(Throughput(100.0, 60000), minutes=30)
    2
    """
    per_epoch_s = speed.train_samples / speed.samples_per_s
    return max(1, int(minutes * 60 * (1 - reserve) / per_epoch_s))


def train_for_budget(cfg: TrainConfig, *, minutes: float, epochs: int | None = None,
                     log=print) -> tuple[TrainConfig, dict[str, Any]]:
    """Train ``cfg`` within ``minutes``: ``epochs=None`` sizes the run from a throughput probe
    (:func:`epochs_for_budget`); ``budget_minutes`` stops it after the first epoch that ends past the budget.

    Returns the configuration that ran and its last metrics record.
    """
    cfg = copy.deepcopy(cfg)
    if epochs is None:
        # 20 steps after 5 of warm-up: a shorter probe read 65 images/s on a 2-core AVX2 machine where the epochs
        # then ran at 80-95, and sized the hour to 4 epochs instead of 5
        speed = train_throughput(cfg, steps=20, warmup=5)
        epochs = epochs_for_budget(speed, minutes=minutes)
        log(f"throughput probe: {speed.samples_per_s:.0f} samples/s on {speed.train_samples} training samples "
            f"-> {epochs} epoch(s) in {minutes:g} min")
    cfg.optim.epochs = epochs
    cfg.budget_minutes = minutes
    return cfg, train(cfg, log=log)
