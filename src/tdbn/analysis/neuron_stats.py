"""Synthetic LIF statistics: membrane potentials (paper Fig. 3, Theorem 2) and firing rates (Fig. 4).

Pre-activations ``x[t] ~ N(0, sigma_in^2)``, drawn independently for every neuron and step (the assumption of
Theorem 2), drive iterative LIF neurons (Eq. 1-3). Theorem 2 says the membrane potential ``u`` is then roughly
``N(0, sigma_out^2)`` with ``sigma_out^2`` proportional to ``sigma_in^2``; Fig. 4 shows how the firing rates
depend on ``sigma_in^2`` relative to the threshold: too small and neurons stay silent, too large and they fire at
every step. This is why tdBN normalizes pre-activations to ``N(0, (alpha v_th)^2)`` (Eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..functional import lif


def _draw(variance: float, timesteps: int, neurons: int, seed: int, constant_input: bool = False) -> torch.Tensor:
    """``[T, neurons]`` pre-activations ~ N(0, variance): a fresh draw per step, or one per neuron repeated."""
    if not variance > 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    if timesteps < 1 or neurons < 1:
        raise ValueError(f"timesteps and neurons must be >= 1, got {timesteps} and {neurons}")
    g = torch.Generator().manual_seed(seed)
    steps = 1 if constant_input else timesteps
    x = torch.randn(steps, neurons, generator=g, dtype=torch.float64) * math.sqrt(variance)
    return x.expand(timesteps, neurons).contiguous()


def _histogram(values: torch.Tensor, edges: torch.Tensor) -> list[float]:
    """Probability density on ``edges`` (values outside the range are dropped)."""
    counts = torch.histogram(values.flatten(), bins=edges).hist
    return (counts / (values.numel() * (edges[1:] - edges[:-1]))).tolist()


@dataclass(frozen=True)
class MembraneStats:
    """One panel of Fig. 3: histograms (densities on ``edges``) of pre-activations ``x`` and membrane ``u``."""

    variance: float
    tau: float
    v_th: float
    var_x: float
    var_u: float
    mean_u: float
    edges: list[float]
    density_x: list[float]
    density_u: list[float]

    @property
    def ratio(self) -> float:
        """``var(u) / var(x)``; Theorem 2: independent of ``sigma_in^2`` (as long as few neurons fire)."""
        return self.var_u / self.var_x


def membrane_stats(
    *, variance: float, tau: float = 0.25, v_th: float = 1.0, timesteps: int = 8, neurons: int = 10_000,
    bins: int = 60, seed: int = 0,
) -> MembraneStats:
    """Distributions of ``x[t] ~ N(0, variance)`` and of the LIF membrane potential ``u[t]`` (Fig. 3).

    ``u`` is taken before the reset (the value compared with ``v_th``) at every step of every neuron.

    Example:
        >>> s = membrane_stats(variance=0.25, neurons=2000)
        >>> 0.2 < s.var_x < 0.3 and s.var_u > s.var_x   # leak adds a fraction tau^2 of past inputs
        True
    """
    x = _draw(variance, timesteps, neurons, seed)
    _, u = lif(x, tau=tau, v_th=v_th, return_membrane=True)  # [T, neurons]
    half = 4.0 * math.sqrt(variance)
    edges = torch.linspace(-half, half, bins + 1, dtype=torch.float64)
    return MembraneStats(
        variance=variance, tau=tau, v_th=v_th, var_x=float(x.var()), var_u=float(u.var()), mean_u=float(u.mean()),
        edges=edges.tolist(), density_x=_histogram(x, edges), density_u=_histogram(u, edges),
    )


@dataclass(frozen=True)
class FiringRateStats:
    """One panel of Fig. 4: the histogram of per-neuron firing rates (spikes / T) over ``neurons`` neurons."""

    variance: float
    constant_input: bool
    tau: float
    v_th: float
    timesteps: int
    neurons: int
    mean_rate: float
    silent_fraction: float
    saturated_fraction: float
    edges: list[float]
    counts: list[int]


def firing_rate_stats(
    *, variance: float, constant_input: bool = False, tau: float = 0.25, v_th: float = 1.0, timesteps: int = 20,
    neurons: int = 10_000, seed: int = 0,
) -> FiringRateStats:
    """Per-neuron firing rates of LIF neurons driven by ``x[t] ~ N(0, variance)`` for ``timesteps`` steps (Fig. 4).

    ``constant_input=False`` draws ``x`` afresh at every step (Theorem 2's assumption); ``True`` gives each neuron
    one draw repeated at every step, as a static image under direct encoding does (the paper's remark that a
    neuron receiving a positive input at every step may still never fire is about this case). The histogram has
    one bin per possible rate ``k / T``; ``silent_fraction`` and ``saturated_fraction`` are the neurons that never
    fire and that fire at every step.

    Example:
        >>> lo = firing_rate_stats(variance=1 / 16, neurons=2000)
        >>> hi = firing_rate_stats(variance=16, neurons=2000)
        >>> lo.silent_fraction > 0.9 and hi.mean_rate > 0.3
        True
    """
    x = _draw(variance, timesteps, neurons, seed, constant_input)
    rates = lif(x, tau=tau, v_th=v_th).mean(0)  # [neurons]
    edges = torch.linspace(-0.5 / timesteps, 1 + 0.5 / timesteps, timesteps + 2, dtype=torch.float64)
    counts = torch.histogram(rates, bins=edges).hist
    return FiringRateStats(
        variance=variance, constant_input=constant_input, tau=tau, v_th=v_th, timesteps=timesteps, neurons=neurons,
        mean_rate=float(rates.mean()), silent_fraction=float((rates == 0).double().mean()),
        saturated_fraction=float((rates == 1).double().mean()),
        edges=edges.tolist(), counts=[int(c) for c in counts.tolist()],
    )
