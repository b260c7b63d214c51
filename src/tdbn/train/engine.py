"""One training epoch and one evaluation pass (paper Alg. 2, Eq. 11-13).

The loss is softmax cross-entropy on the time-averaged decoder output ``Q = (1/T) sum_t M o[t]`` (Eq. 11-12),
which is what the models return. Metrics are summed over the epoch on the device, reduced over processes, and
reported as means: loss, top-1 and top-5 accuracy (fractions), mean firing rate, and samples per second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..layers import LIF  # noqa: F401 (doctest namespace)
from ..layers.units import spike_sources
from .amp import Precision
from .distributed import Context, all_reduce_sum
from .errors import NonFiniteError, NonFiniteLossError, TrainingError

__all__ = ["FiringRate", "evaluate", "train_one_epoch"]


class FiringRate:
    """Mean firing rate of all LIF neurons while active: spikes / (neurons x time steps), over every LIF output.

    Forward hooks on the modules that output LIF spikes (:func:`tdbn.layers.units.spike_sources`: the units in
    training, where their operators compute the spikes) accumulate on the device; they are removed on exit.

    >>> net = nn.Sequential(LIF(v_th=0.5))
    >>> with FiringRate(net) as fr:
    ...     _ = net(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # [T=2, N=2]: the first neuron fires twice
    >>> fr.rate()
    0.5
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.spikes: torch.Tensor | None = None
        self.count = 0
        self._handles: list = []

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        s = output.detach().sum(dtype=torch.float64)
        self.spikes = s if self.spikes is None else self.spikes + s
        self.count += output.numel()

    def __enter__(self) -> FiringRate:
        self._handles = [m.register_forward_hook(self._hook) for m in spike_sources(self.model)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def totals(self, device: torch.device) -> torch.Tensor:
        """``[spikes, neuron-steps]`` as a float64 tensor on ``device``."""
        spikes = self.spikes.to(device) if self.spikes is not None else torch.zeros((), dtype=torch.float64,
                                                                                      device=device)
        return torch.stack([spikes, torch.tensor(float(self.count), dtype=torch.float64, device=device)])

    def rate(self) -> float:
        return float(self.spikes) / self.count if self.count else 0.0


def _correct(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numbers of top-1 and top-5 hits (top-k with k = min(5, classes))."""
    k = min(5, output.shape[1])
    top = output.topk(k, dim=1).indices  # [N, k]
    hits = top == target[:, None]
    return hits[:, 0].sum(), hits.any(dim=1).sum()


def _progress(iterable: Iterable, *, total: int, desc: str, enabled: bool):
    # a bar only on a terminal: redirected to a file (nohup, SLURM, `> log`) its \r updates bury the epoch lines
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)


def _full(output: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 for the loss (autocast may give fp16 / bf16)."""
    return output.float() if output.dtype in (torch.float16, torch.bfloat16) else output


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _all_true(flags: torch.Tensor, ctx: Context) -> torch.Tensor:
    """``flags`` (float, 1 = fine) reduced with MIN over the processes, so every process stops together."""
    if ctx.distributed:
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return flags


def _norm_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The running statistics of every normalization layer (what a forward pass in train mode updates)."""
    return [(f"{name}.{b}" if name else b, t) for name, m in model.named_modules()
            for b, t in m.named_buffers(recurse=False) if isinstance(t, torch.Tensor)]


def _first_bad_grad(model: nn.Module) -> str:
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name.removeprefix("module.")
    return "a parameter"


def _check_step(model: nn.Module, x: torch.Tensor, loss: torch.Tensor, buffers: list[tuple[str, torch.Tensor]],
                ctx: Context, *, epoch: int, iteration: int) -> None:
    """One reduction over input, loss and running statistics; raises :class:`NonFiniteError` naming which."""
    stats = [t for _, t in buffers if t.is_floating_point()]
    flags = torch.stack([
        torch.isfinite(x).all(), torch.isfinite(loss.detach()),
        torch.stack([torch.isfinite(t).all() for t in stats]).all() if stats else torch.ones((), dtype=torch.bool,
                                                                                                device=x.device),
    ]).to(torch.float32)
    flags = _all_true(flags, ctx).tolist()
    if flags[0] < 1:
        raise NonFiniteError(epoch=epoch, iteration=iteration, what="input")
    if flags[1] < 1:
        raise NonFiniteLossError(epoch=epoch, iteration=iteration, value=float(loss.detach()))
    if flags[2] < 1:
        bad = next((n for n, t in buffers if t.is_floating_point() and not bool(torch.isfinite(t).all())), "a layer")
        raise NonFiniteError(epoch=epoch, iteration=iteration, what=f"statistics of {bad.removeprefix('module.')}")


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    ctx: Context,
    *,
    epoch: int,
    epochs: int,
    progress: bool = False,
) -> dict[str, float]:
    """Train for one pass over ``loader``; returns ``loss, top1, top5, firing_rate, images_per_s, lr``.

    Before each update, one reduction checks the batch's inputs, the loss and the normalization layers' running
    statistics, and another the total gradient norm (fp32 / bf16; with fp16 the gradient scaler skips such
    steps itself). A NaN or infinity raises :class:`NonFiniteError` (epoch and iteration from 1, and what:
    ``input``, ``loss``, ``gradient of <parameter>``, ``statistics of <buffer>``) with the running statistics
    restored and no parameter changed, so the parameters and the last checkpoint stay those of the last good
    step.
    """
    model.train()
    device, dtype = ctx.device, _param_dtype(model)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits, n
    lr = optimizer.param_groups[0]["lr"]
    buffers = _norm_buffers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    bar = _progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", enabled=progress)
    with FiringRate(model) as fr:
        for i, (x, y) in enumerate(bar):
            x = x.to(device, dtype, non_blocking=True)  # [N, C, H, W] images or [T, N, C, H, W] frames
            y = y.to(device, non_blocking=True)
            saved = [t.clone() for _, t in buffers]  # running statistics before this step
            try:
                with precision.autocast():
                    output = model(x)  # [N, classes], averaged over time (Eq. 11)
                loss = F.cross_entropy(_full(output), y)  # Eq. 12
                _check_step(model, x, loss, buffers, ctx, epoch=epoch + 1, iteration=i + 1)
                optimizer.zero_grad(set_to_none=True)
                if precision.scaler.is_enabled():  # fp16: the scaler skips steps with inf/NaN gradients itself
                    precision.backward_step(loss, optimizer)
                else:
                    loss.backward()
                    grads = [p.grad for p in params if p.grad is not None]
                    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=device)
                    if _all_true(torch.isfinite(norm).to(torch.float32).reshape(1), ctx).item() < 1:
                        raise NonFiniteError(epoch=epoch + 1, iteration=i + 1,
                                             what=f"gradient of {_first_bad_grad(model)}")
                    optimizer.step()
            except NonFiniteError:
                with torch.no_grad():
                    for (_, t), old in zip(buffers, saved):
                        t.copy_(old)  # the step is not applied: neither weights nor statistics change
                optimizer.zero_grad(set_to_none=True)
                raise
            scheduler.step()
            with torch.no_grad():
                top1, top5 = _correct(output, y)
                n = y.shape[0]
                sums += torch.stack([loss.detach().double() * n, top1.double(), top5.double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=device)])
            if progress and i % 10 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        firing = fr.totals(device)
    totals = all_reduce_sum(torch.cat([sums, firing]), ctx).tolist()
    loss_sum, c1, c5, n, spikes, steps = totals
    seconds = time.perf_counter() - start
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "firing_rate": spikes / max(steps, 1.0),
            "images_per_s": n / seconds, "lr": lr, "seconds": seconds}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    ctx: Context,
    *,
    precision: Precision | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Loss, top-1, top-5 and mean firing rate over the whole test set (every process's shard, reduced)."""
    model.eval()
    device, dtype = ctx.device, _param_dtype(model)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    start = time.perf_counter()
    with FiringRate(model) as fr:
        for i, (x, y) in enumerate(_progress(loader, total=len(loader), desc=desc, enabled=progress)):
            x = x.to(device, dtype, non_blocking=True)
            if not bool(torch.isfinite(x).all()):
                raise TrainingError(f"{desc}: non-finite input (NaN or infinity) in test batch {i + 1}; check the data")
            y = y.to(device, non_blocking=True)
            if precision is not None:
                with precision.autocast():
                    output = model(x)
            else:
                output = model(x)
            loss = F.cross_entropy(_full(output), y, reduction="sum")
            top1, top5 = _correct(output, y)
            sums += torch.stack([loss.double(), top1.double(), top5.double(),
                                 torch.tensor(float(y.shape[0]), dtype=torch.float64, device=device)])
        firing = fr.totals(device)
    loss_sum, c1, c5, n, spikes, steps = all_reduce_sum(torch.cat([sums, firing]), ctx).tolist()
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / max(n, 1.0), "top1": c1 / max(n, 1.0), "top5": c5 / max(n, 1.0),
            "firing_rate": spikes / max(steps, 1.0), "samples": int(n), "images_per_s": n / seconds}
