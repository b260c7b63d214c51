"""Depth study: accuracy of plain and residual spiking nets of increasing depth after a fixed training budget.

The paper's central claim is that tdBN lets directly-trained SNNs go deep (Tables 1-3, Fig. 2). This study
checks it at a scale a CPU can run: for each architecture (``plain``, ``resnet``), depth and normalization
(``tdbn``, ``bn`` = standard BN without the ``alpha * v_th`` scale, ``none``), a narrow network is trained for the
same number of SGD iterations on the same mini-batches and evaluated on held-out data.

Two test accuracies are kept: with the running normalization statistics accumulated during training (the usual
eval mode), and after recomputing them on 1024 training images with the final weights ("precise BN",
:func:`~tdbn.analysis.calibrate.calibrate_norm_stats`). After a few hundred iterations at lr 0.1 the running
averages still lag the weights, and a spiking net is sensitive to that lag; the second number measures what the
network learned.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from .. import models
from .calibrate import calibrate_norm_stats
from .datasets import batches
from .training import accuracy, sgd_steps


@dataclass(frozen=True)
class DepthRun:
    """One trained network: final training loss (mean of the last 10% of iterations) and test accuracies (running
    statistics, and statistics recomputed after training; equal for ``norm="none"``)."""

    arch: str
    norm: str
    depth: int
    seed: int
    params: int
    iterations: int
    train_loss: float
    test_accuracy: float
    test_accuracy_recalibrated: float
    diverged: bool
    seconds: float


def depth_run(
    arch: str,
    depth: int,
    norm: str,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    width: float,
    timesteps: int,
    batch_size: int,
    iterations: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    tau: float,
    seed: int,
) -> DepthRun:
    """Train ``arch`` (``"plain"`` or ``"resnet"``) of ``depth`` layers with ``norm`` and test it."""
    x, y = train
    torch.manual_seed(seed)
    net = models.create(
        arch, num_classes=int(y.max()) + 1, in_channels=int(x.shape[1]), depth=depth, width=width,
        timesteps=timesteps, tau=tau, norm=norm,
    )
    start = time.perf_counter()
    losses = sgd_steps(
        net, batches(x, y, batch_size=batch_size, seed=seed), iterations=iterations, lr=lr, momentum=momentum,
        weight_decay=weight_decay,
    )
    diverged = not math.isfinite(losses[-1])
    tail = losses[-max(1, len(losses) // 10):]
    chance = 1.0 / (int(y.max()) + 1)
    acc = accuracy(net, *test) if not diverged else chance
    recal = acc
    if norm != "none" and not diverged:
        calibrate_norm_stats(net, x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:1024]])
        recal = accuracy(net, *test)
    return DepthRun(
        arch=arch, norm=norm, depth=depth, seed=seed, params=sum(p.numel() for p in net.parameters()),
        iterations=len(losses), train_loss=sum(tail) / len(tail), test_accuracy=acc,
        test_accuracy_recalibrated=recal, diverged=diverged,
        seconds=time.perf_counter() - start,
    )


@dataclass
class DepthStudy:
    """Runs of a depth study and the settings that produced them."""

    config: dict
    runs: list[DepthRun] = field(default_factory=list)

    def accuracy(
        self, arch: str, norm: str, depth: int, *, recalibrated: bool = True
    ) -> tuple[float, float, int]:
        """Mean and standard deviation (over seeds) of the test accuracy, and the number of runs."""
        runs = [r for r in self.runs if (r.arch, r.norm, r.depth) == (arch, norm, depth)]
        accs = [r.test_accuracy_recalibrated if recalibrated else r.test_accuracy for r in runs]
        if not accs:
            return math.nan, math.nan, 0
        return statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0, len(accs)

    def markdown_table(self, *, recalibrated: bool = True) -> str:
        """Test accuracy (%) per architecture and norm (rows) and depth (columns), mean ± std over seeds."""
        depths = sorted({r.depth for r in self.runs})
        keys = list(dict.fromkeys((r.arch, r.norm) for r in self.runs))
        lines = ["| net | norm | " + " | ".join(f"depth {d}" for d in depths) + " |",
                 "|---|---|" + "---:|" * len(depths)]
        for arch, norm in keys:
            cells = []
            for d in depths:
                mean, std, n = self.accuracy(arch, norm, d, recalibrated=recalibrated)
                cells.append("-" if n == 0 else f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else ""))
            lines.append(f"| {arch} | {norm} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"config": self.config, "runs": [asdict(r) for r in self.runs]}


def depth_study(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    archs: Sequence[str] = ("plain", "resnet"),
    depths: Sequence[int] = (8, 14, 20, 34, 50),
    norms: Sequence[str] = ("tdbn", "bn", "none"),
    seeds: Sequence[int] = (0,),
    width: float = 0.125,
    timesteps: int = 2,
    batch_size: int = 32,
    iterations: int = 300,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    tau: float = 0.25,
    log: Callable[[str], None] = lambda s: None,
    on_run: Callable[[DepthStudy], None] = lambda s: None,
) -> DepthStudy:
    """Train and test every ``(arch, depth, norm, seed)``; ``on_run(study)`` after each run (to save progress).

    ``resnet`` needs even depths (``2 + 2 x blocks``). Every run sees the same mini-batches for a given seed.
    """
    bad = [d for d in depths if "resnet" in archs and d % 2]
    if bad:
        raise ValueError(f"resnet depths must be even (2 + 2 x blocks), got {bad}; use nearby even depths")
    config = dict(
        archs=list(archs), depths=list(depths), norms=list(norms), seeds=list(seeds), width=width,
        timesteps=timesteps, batch_size=batch_size, iterations=iterations, lr=lr, momentum=momentum,
        weight_decay=weight_decay, tau=tau, train_examples=len(train[0]), test_examples=len(test[0]),
        input_shape=list(train[0].shape[1:]),
    )
    study = DepthStudy(config)
    for seed in seeds:
        for arch in archs:
            for depth in depths:
                for norm in norms:
                    run = depth_run(
                        arch, depth, norm, train=train, test=test, width=width, timesteps=timesteps,
                        batch_size=batch_size, iterations=iterations, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, tau=tau, seed=seed,
                    )
                    study.runs.append(run)
                    log(f"{arch}-{depth} {norm} seed {seed}: loss {run.train_loss:.3f}, test acc "
                        f"{100 * run.test_accuracy:.1f}% (recalibrated {100 * run.test_accuracy_recalibrated:.1f}%)"
                        f"{' (diverged)' if run.diverged else ''}, "
                        f"{run.seconds:.0f}s")
                    on_run(study)
    return study
