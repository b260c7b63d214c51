"""Our discrete LIF neuron (paper Eq. 1-3) as NIR's continuous-time LIF, and back.

Our neuron, one step per time bin::

    u[t] = tau * u[t-1] * (1 - o[t-1]) + x[t]            o[t] = 1[u[t] > v_th]          (Eq. 1-3)

NIR's LIF node (``nir.LIF``), continuous time, with a hard reset to ``v_reset`` when ``v > v_threshold``::

    tau_m * dv/dt = (v_leak - v) + r * I

One forward-Euler step of length ``dt`` gives::

    v[t] = v[t-1] + (dt / tau_m) * (v_leak - v[t-1] + r * I[t])
         = (1 - dt / tau_m) * v[t-1] + (dt / tau_m) * r * I[t]          (v_leak = 0)

so choosing, for a time step ``dt`` of the exporter's choice,

    tau_m = dt / (1 - tau)      r = 1 / (1 - tau)      v_leak = 0      v_threshold = v_th      v_reset = 0

makes ``1 - dt / tau_m = tau`` and ``(dt / tau_m) * r = 1``: the Euler step *is* Eq. 1, with ``I[t] = x[t]``.
``tau = 0`` (no memory) is the edge case ``tau_m = dt``, ``r = 1``.

Reset and threshold: both formulations fire when the potential is *strictly* above the threshold, and both
reset to 0 in the same step in which the neuron fires, so the next step starts from ``v = 0``; this is Eq. 1's
``(1 - o[t-1])`` factor. A simulator must therefore (i) integrate, (ii) compare with ``>``, (iii) reset, in this
order, with no refractory period and no one-step reset delay. What cannot map exactly: a simulator that compares
with ``>=`` disagrees whenever a potential lands exactly on the threshold; one that integrates the ODE exactly
(``exp(-dt / tau_m)`` instead of ``1 - dt / tau_m``) needs ``tau_m = -dt / log(tau)`` instead, and has no finite
value for ``tau = 0``; and a simulator whose step is not the ``dt`` recorded with the graph simulates a different
neuron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..functional.params import LIFParameters

Tensor = torch.Tensor

# The time step the NIR graph is written for, in seconds. 0.1 ms is the step that snnTorch's NIR importer assumes
# for every LIF node; any positive value gives the same discrete dynamics when the consumer uses the same dt.
DEFAULT_DT = 1e-4

# relative tolerance when checking that a NIR LIF node is a discrete LIF of ours: ``dt * r / tau_m == 1``
_GAIN_RTOL = 1e-6


@dataclass(frozen=True)
class NIRLIFParams:
    """Per-neuron parameters of ``nir.LIF`` (all neurons of a layer share them)."""

    tau: float  # membrane time constant tau_m, seconds
    r: float  # resistance
    v_leak: float
    v_threshold: float
    v_reset: float


def lif_to_nir(*, tau: float, v_th: float, dt: float = DEFAULT_DT) -> NIRLIFParams:
    """NIR LIF parameters whose forward-Euler step of length ``dt`` is our Eq. 1-3 with decay ``tau``.

    Example:
        >>> p = lif_to_nir(tau=0.25, v_th=0.5, dt=1e-4)
        >>> round(p.tau * 1e4, 6), round(p.r, 6), p.v_threshold, p.v_reset
        (1.333333, 1.333333, 0.5, 0.0)
    """
    LIFParameters(tau=tau, v_th=v_th)  # validates
    if not dt > 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    keep = 1.0 - float(tau)  # dt / tau_m
    return NIRLIFParams(tau=dt / keep, r=1.0 / keep, v_leak=0.0, v_threshold=float(v_th), v_reset=0.0)


def nir_to_lif(params: NIRLIFParams, *, dt: float, where: str = "LIF node") -> tuple[float, float]:
    """``(tau, v_th)`` of the discrete LIF equal to a NIR LIF simulated by forward Euler with step ``dt``.

    Raises ``ValueError`` naming ``where`` when the node is not one of ours: a leak or reset potential other than
    0, or an input gain ``dt * r / tau_m`` other than 1 (Eq. 1 adds its input unscaled), or a decay outside [0, 1).
    """
    gain = dt * params.r / params.tau if dt > 0 and params.tau > 0 else 1.0  # bad dt / tau: reported below
    if not math.isclose(gain, 1.0, rel_tol=_GAIN_RTOL):
        raise ValueError(
            f"{where}: input gain dt * r / tau = {gain:.6g} for dt={dt}; Eq. 1 adds its input unscaled, so r must be "
            f"tau / dt = {params.tau / dt:.6g} (was the graph written for another dt?)"
        )
    tau, v_th, _ = nir_to_scaled_lif(params, dt=dt, where=where)
    return tau, v_th


def nir_to_scaled_lif(params: NIRLIFParams, *, dt: float, where: str = "LIF node") -> tuple[float, float, float]:
    """``(tau, v_th, gain)``: a NIR LIF stepped by forward Euler with step ``dt`` is ``u = tau * u + gain * x``.

    Dividing by ``gain`` gives our Eq. 1 on the unscaled input with threshold ``v_th / gain`` (what
    :func:`tdbn.export.from_nir` builds; snnTorch's importer does the same). ``gain = 1 - tau`` for the portable
    form (``r = 1``), 1 for the literal form. Raises ``ValueError`` naming ``where`` for a leak or reset potential
    other than 0, a non-positive gain or threshold, or a decay outside [0, 1).
    """
    if not dt > 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    if params.v_leak != 0.0 or params.v_reset != 0.0:
        raise ValueError(
            f"{where}: v_leak={params.v_leak}, v_reset={params.v_reset}; tdbn's LIF (Eq. 1) leaks towards 0 and "
            "resets to 0, so both must be 0"
        )
    if not params.tau > 0:
        raise ValueError(f"{where}: tau={params.tau} must be > 0 seconds")
    gain = dt * params.r / params.tau
    if not gain > 0:
        raise ValueError(f"{where}: input gain dt * r / tau = {gain:.6g} must be > 0 (r={params.r})")
    if math.isclose(gain, 1.0, rel_tol=_GAIN_RTOL):
        gain = 1.0  # the literal form, up to the rounding of r and tau_m
    tau = 1.0 - dt / params.tau
    if abs(tau) < 1e-12:  # tau_m == dt up to rounding: the memoryless neuron
        tau = 0.0
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"{where}: decay 1 - dt / tau = {tau:.6g} lies outside [0, 1) (tau={params.tau}, dt={dt})")
    if not params.v_threshold > 0:
        raise ValueError(f"{where}: v_threshold={params.v_threshold} must be > 0")
    return tau, float(params.v_threshold), float(gain)


def euler_lif(x: Tensor, params: NIRLIFParams, *, dt: float) -> Tensor:
    """Spikes of a NIR LIF simulated by forward Euler with step ``dt``, written as NIR states it.

    ``x`` is the input current ``[T, N, ...]``; the update is integrate, compare with ``>``, reset. This is the
    reference the mapping above is tested against (``tdbn.functional.lif`` is the fast path).
    """
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        v = v + (dt / params.tau) * (params.v_leak - v + params.r * x[t])
        z = v > params.v_threshold
        v = torch.where(z, torch.full_like(v, params.v_reset), v)
        out.append(z.to(x.dtype))
    return torch.stack(out)
