"""One training epoch and one evaluation pass (paper Alg. 2, Eq. 11-13).

The loss is softmax cross-entropy on the time-averaged decoder output ``Q = (1/T) sum_t M o[t]`` (Eq. 11-12),
which is what the models return, or TET on every step's output (:class:`Objective`; the evaluation loss is always
Eq. 12's, so runs with either objective report comparable test losses). Metrics are summed over the epoch on the device, reduced over processes, and
reported as means: loss, top-1 and top-5 accuracy (fractions), mean firing rate, and samples per second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..functional.losses import TET_LAMBDA, TET_PHI, tet_loss
from ..layers import LIF  # noqa: F401 (doctest namespace)
from ..layers.units import spike_sources
from .amp import Precision
from .distributed import Context, all_reduce_sum
from .errors import NonFiniteError, NonFiniteLossError, TrainingError

__all__ = ["EpochProgress", "FiringRate", "Objective", "StepCheckpoints", "evaluate", "train_one_epoch"]


@dataclass(frozen=True)
class Objective:
    """What a training step minimizes: ``"ce"``, the paper's cross-entropy of the time-averaged scores (Eq. 12), or
    ``"tet"``, :func:`tdbn.functional.tet_loss` of every step's scores with ``tet_lambda`` and ``tet_phi``.
    ``label_smoothing`` (ours; 0 = the paper) mixes each one-hot target with the uniform distribution in either
    cross-entropy, as :func:`torch.nn.functional.cross_entropy` defines it."""

    loss: str = "ce"
    tet_lambda: float = TET_LAMBDA
    tet_phi: float = TET_PHI
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "tet"):
            raise ValueError(f"unknown training loss {self.loss!r}: choose 'ce' (Eq. 12) or 'tet'")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def per_step(self) -> bool:
        """Whether the loss needs every step's scores ``[T, N, K]`` (the model is called with ``per_step=True``)."""
        return self.loss == "tet"

    def __call__(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "tet":
            return tet_loss(scores, y, lam=self.tet_lambda, phi=self.tet_phi, label_smoothing=self.label_smoothing)
        return F.cross_entropy(scores, y, label_smoothing=self.label_smoothing)  # Eq. 12 (smoothing 0)


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


def _all_finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A bool scalar on the device: every element of every tensor is finite (no host sync).

    One fused L2 norm per tensor (``_foreach_norm``, one call per dtype): a NaN or infinity makes it non-finite.
    So does a finite value too large to square (beyond ~1e19 in float32), a gradient no training survives; the
    max-abs norm, which has no such limit, is about 10 times slower on the CPU.
    """
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    ok = torch.ones((), dtype=torch.bool, device=device)
    for group in groups.values():
        ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(group))).all()
    return ok


def _first_bad(named: Iterable[tuple[str, torch.Tensor | None]], default: str) -> str:
    for name, t in named:
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name.removeprefix("module.")
    return default


def _check_step(model: nn.Module, input_ok: torch.Tensor, loss: torch.Tensor, stats: list[torch.Tensor],
                grads: list[torch.Tensor] | None, due: bool, ctx: Context, *, epoch: int, iteration: int) -> bool:
    """The step's one reduction (one all-reduce, one host sync): input, loss, running statistics, gradients.

    Raises :class:`NonFiniteError` naming the first of them holding a NaN or infinity. ``due`` (this process's
    wish to write a checkpoint after the step) rides along; returns whether any process wished so, so all agree.
    ``grads=None``: not checked here (fp16, whose gradient scaler skips such steps itself).
    """
    device = loss.device
    flags = torch.stack([
        input_ok, torch.isfinite(loss.detach()), _all_finite(stats, device),
        _all_finite(grads, device) if grads is not None else torch.ones((), dtype=torch.bool, device=device),
        torch.tensor(not due, device=device),
    ]).to(torch.float32)
    flags = _all_true(flags, ctx).tolist()
    if flags[0] < 1:
        raise NonFiniteError(epoch=epoch, iteration=iteration, what="input")
    if flags[1] < 1:
        raise NonFiniteLossError(epoch=epoch, iteration=iteration, value=float(loss.detach()))
    if flags[2] < 1:
        bad = _first_bad(_norm_buffers(model), "a layer")
        raise NonFiniteError(epoch=epoch, iteration=iteration, what=f"statistics of {bad}")
    if flags[3] < 1:
        bad = _first_bad(((n, p.grad) for n, p in model.named_parameters()), "a parameter")
        raise NonFiniteError(epoch=epoch, iteration=iteration, what=f"gradient of {bad}")
    return flags[4] < 1


@dataclass
class EpochProgress:
    """How far an epoch got on this process: what a mid-epoch checkpoint stores to continue it exactly."""

    step: int = 0  # training steps done in this epoch
    sums: torch.Tensor | None = None  # float64 [loss * n, top-1 hits, top-5 hits, n] over those steps
    spikes: torch.Tensor | None = None  # float64 scalar: spikes counted so far (FiringRate)
    count: int = 0  # neuron-time-steps counted so far
    seconds: float = 0.0  # training time of this epoch so far
    lr: float | None = None  # the learning rate at the epoch's start

    def to_dict(self) -> dict[str, Any]:
        """Plain data (CPU tensors, numbers) for a checkpoint."""
        cpu = lambda t: t.detach().to("cpu", copy=True) if t is not None else None  # noqa: E731
        return {"step": self.step, "sums": cpu(self.sums), "spikes": cpu(self.spikes), "count": self.count,
                "seconds": self.seconds, "lr": self.lr}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochProgress:
        return cls(**{k: data[k] for k in ("step", "sums", "spikes", "count", "seconds", "lr")})


class StepCheckpoints(Protocol):
    """What :func:`train_one_epoch` needs to write checkpoints in the middle of an epoch."""

    def due(self, steps_done: int) -> bool:
        """Whether this process wants a checkpoint once ``steps_done`` steps (since the run began) are done."""

    def save(self, progress: EpochProgress) -> None:
        """Write one (a collective call: every process calls it after the same step)."""


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
    resume: EpochProgress | None = None,
    checkpoints: StepCheckpoints | None = None,
    objective: Objective | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; returns ``loss, top1, top5, firing_rate, images_per_s, lr``.

    ``objective``: the loss minimized (default: Eq. 12); ``loss`` is its mean, top-1 / top-5 are those of the
    time-averaged scores whatever the objective.

    After each backward pass one reduction checks the batch's inputs, the loss, the normalization layers'
    running statistics and the gradients (fp32 / bf16; with fp16 the gradient scaler skips such steps itself).
    A NaN or infinity raises :class:`NonFiniteError` (epoch and iteration from 1, and what: ``input``, ``loss``,
    ``gradient of <parameter>``, ``statistics of <buffer>``) with the running statistics restored and no
    parameter changed, so the parameters and the last checkpoint stay those of the last good step.

    ``resume``: continue an epoch interrupted after ``resume.step`` steps (the loader must start at that step);
    the metrics then cover the whole epoch. ``checkpoints``: asked after every step but the last whether to write
    a mid-epoch checkpoint; the question rides on the step's reduction, so all processes write together.
    """
    model.train()
    device, dtype = ctx.device, _param_dtype(model)
    resume = resume or EpochProgress()
    objective = objective or Objective()
    sums = resume.sums.to(device) if resume.sums is not None else \
        torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits, n
    lr = resume.lr if resume.lr is not None else optimizer.param_groups[0]["lr"]
    buffers = [t for _, t in _norm_buffers(model)]
    stats = [t for t in buffers if t.is_floating_point()]
    snapshot = [t.clone() for t in buffers]  # running statistics before the step, refreshed in place
    params = [p for p in model.parameters() if p.requires_grad]
    total = len(loader)
    start = time.perf_counter() - resume.seconds
    bar = _progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", enabled=progress)
    with FiringRate(model) as fr:
        if resume.spikes is not None:
            fr.spikes, fr.count = resume.spikes.to(device), resume.count
        for i, (x, y) in enumerate(bar, start=resume.step):
            x = x.to(device, dtype, non_blocking=True)  # [N, C, H, W] images or [T, N, C, H, W] frames
            y = y.to(device, non_blocking=True)
            if buffers:
                torch._foreach_copy_(snapshot, buffers)
            try:
                input_ok = torch.isfinite(x).all()
                with precision.autocast():
                    if objective.per_step:
                        scores = model(x, per_step=True)  # [T, N, classes]
                        output = scores.mean(0)  # what model(x) returns (Eq. 11), for the metrics
                    else:
                        scores = output = model(x)  # [N, classes], averaged over time (Eq. 11)
                loss = objective(_full(scores), y)
                optimizer.zero_grad(set_to_none=True)
                precision.backward(loss)
                grads = None if precision.scaler.is_enabled() else [p.grad for p in params if p.grad is not None]
                wish = checkpoints is not None and i + 1 < total and checkpoints.due(scheduler.last_epoch + 1)
                save = _check_step(model, input_ok, loss, stats, grads, wish, ctx, epoch=epoch + 1,
                                   iteration=i + 1)
                precision.step(optimizer)
            except NonFiniteError:
                with torch.no_grad():
                    torch._foreach_copy_(buffers, snapshot)  # not applied: neither weights nor statistics change
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
            if save:
                assert checkpoints is not None
                checkpoints.save(EpochProgress(step=i + 1, sums=sums, spikes=fr.spikes, count=fr.count,
                                               seconds=time.perf_counter() - start, lr=lr))
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
