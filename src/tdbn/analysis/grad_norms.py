"""Gradient norm of each layer during early training (paper Fig. 2, Theorem 1).

The paper trains a 20-layer plain spiking net on CIFAR-10 and plots, for each layer except the encoding and
decoding layers, the mean of ``||dL/dW||_2`` over the first 1/6 epoch, for ``tau`` in {0, 0.25, 0.5}. With tdBN
the curve is flat for ``tau = 0`` and rises only slowly with depth otherwise: no vanishing or exploding gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .. import models
from .datasets import batches
from .probes import io_layers, synaptic_layers
from .training import sgd_steps


def hidden_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv / fc layer of a ``SpikingNet`` except the encoding and the decoding layer, in order."""
    encoding, decoding = io_layers(model)
    return [(n, m) for n, m in synaptic_layers(model) if m is not encoding and m is not decoding]


def weight_grad_norms(layers: Sequence[tuple[str, nn.Module]]) -> list[float]:
    """``||dL/dW||_2`` (Frobenius norm of the weight gradient, bias excluded) of each layer; 0 without gradient."""
    return [float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0 for _, m in layers]


def mean_grad_norms(
    model: nn.Module,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    iterations: int,
    lr: float = 0.1,
    momentum: float = 0.9,
) -> tuple[list[str], list[float], list[float]]:
    """Train ``model`` for ``iterations`` SGD steps and average each hidden layer's weight-gradient norm over them.

    Returns ``(layer names, mean norms, losses)``; a diverged run (non-finite loss) stops early and averages the
    steps it completed.
    """
    layers = hidden_weight_layers(model)
    sums = [0.0] * len(layers)
    steps = [0]

    def record(_: nn.Module) -> None:
        for i, g in enumerate(weight_grad_norms(layers)):
            sums[i] += g
        steps[0] += 1

    losses = sgd_steps(model, data, iterations=iterations, lr=lr, momentum=momentum, after_backward=record)
    n = max(steps[0], 1)
    return [name for name, _ in layers], [s / n for s in sums], losses


@dataclass(frozen=True)
class GradNormCurve:
    """Mean gradient norm per hidden layer of one network (one curve of Fig. 2)."""

    norm: str
    tau: float
    layers: list[str]
    mean_norms: list[float]
    iterations: int
    first_loss: float
    last_loss: float

    @property
    def label(self) -> str:
        return f"{self.norm}, tau={self.tau:g}"

    @property
    def ratio(self) -> float:
        """Largest over smallest layer norm (``inf`` if a layer got no gradient, ``nan`` if the run diverged)."""
        lo, hi = min(self.mean_norms), max(self.mean_norms)
        if not all(math.isfinite(v) for v in self.mean_norms):
            return math.nan
        return hi / lo if lo > 0 else math.inf


@dataclass(frozen=True)
class GradNormStudy:
    """All curves of a gradient-norm study and the settings that produced them."""

    config: dict
    curves: list[GradNormCurve] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "curves": [asdict(c) | {"label": c.label, "ratio_max_min": c.ratio} for c in self.curves],
        }


def grad_norm_study(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    taus: Sequence[float] = (0.0, 0.25, 0.5),
    norms: Sequence[str] = ("tdbn", "bn", "none"),
    depth: int = 20,
    width: float = 0.125,
    timesteps: int = 4,
    batch_size: int = 32,
    iterations: int = 100,
    lr: float = 0.1,
    momentum: float = 0.9,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> GradNormStudy:
    """Fig. 2 for every ``(norm, tau)``: a plain spiking net of ``depth`` layers trained on ``x``, ``y``.

    Each network starts from the same seed and sees the same mini-batches; ``norm="bn"`` is standard BN (the
    ``alpha * v_th`` scale removed), ``"none"`` no normalization (see ``tdbn.models.SpikingOptions``).
    """
    config = dict(
        model="plain", depth=depth, width=width, timesteps=timesteps, batch_size=batch_size, iterations=iterations,
        lr=lr, momentum=momentum, seed=seed, examples=len(x), in_channels=int(x.shape[1]),
        input_size=list(x.shape[2:]), num_classes=int(y.max()) + 1,
    )
    study = GradNormStudy(config)
    for norm in norms:
        for tau in taus:
            torch.manual_seed(seed)
            net = models.create(
                "plain", num_classes=config["num_classes"], in_channels=config["in_channels"], depth=depth,
                width=width, timesteps=timesteps, tau=tau, norm=norm,
            )
            data = batches(x, y, batch_size=batch_size, seed=seed)
            names, means, losses = mean_grad_norms(net, data, iterations=iterations, lr=lr, momentum=momentum)
            curve = GradNormCurve(norm, float(tau), names, means, len(losses), losses[0], losses[-1])
            study.curves.append(curve)
            log(f"{curve.label}: {len(losses)} iterations, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                f"max/min layer norm {curve.ratio:.3g}")
    return study
