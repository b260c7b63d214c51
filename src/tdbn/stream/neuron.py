"""One LIF time step with the membrane potential carried in and out (paper Eq. 1-3).

The multi-step kernels (:func:`tdbn.functional.lif`) compute, for ``t >= 1``::

    u[t] = x[t] + (tau * u[t-1]) * keep[t-1],   keep[t-1] = 1[u[t-1] <= v_th] = 1 - o[t-1],   o[t] = 1[u[t] > v_th]

(``integrate_reference``: one ``addcmul(x[t], u[t-1], keep, value=tau)``; the compiled loop does the same rounding).
A step here is not a copy of that recursion: it is the LIF operator continued from the carried potential,
``tdbn.functional.lif(x[t], u0=u[t-1])``, whose first step is exactly the update above with the same float
operations (:func:`tdbn.operators.recursions.step_reference`). Hence spikes and potentials equal those of the
multi-step forward bit for bit.
"""

from __future__ import annotations

import torch

from ..functional import lif as _lif

Tensor = torch.Tensor


def check_carried(u_prev: Tensor, step_shape: torch.Size) -> None:
    """Refuse a carried potential whose shape is not this step's ``[N, ...]``."""
    if u_prev.shape != step_shape:
        raise ValueError(
            f"carried membrane potential of shape {tuple(u_prev.shape)} does not match this step's input "
            f"{tuple(step_shape)}: a stream's batch size and input size must stay the same"
        )


def lif_step(
    x_t: Tensor, u_prev: Tensor | None, *, tau: float, v_th: float
) -> tuple[Tensor, Tensor]:
    """Advance LIF neurons by one step (Eq. 1-3). Returns ``(spikes [1, N, ...], u [N, ...])``.

    Args:
        x_t: input currents of this step, ``[1, N, ...]`` (a time axis of length one, as a layer passes it).
        u_prev: membrane potentials after the previous step (before its reset), ``[N, ...]``; ``None`` at the
            first step, where ``u[0] = x[0]`` (the kernels' ``u[-1] = 0``).
        tau, v_th: the neuron's decay and threshold.

    Example:
        >>> x = torch.tensor([[0.3], [0.3], [0.3]])  # [T=3, N=1]
        >>> u, out = None, []
        >>> for t in range(3):
        ...     o, u = lif_step(x[t:t + 1], u, tau=0.5, v_th=0.4)
        ...     out.append(o.item())
        >>> out == tdbn.functional.lif(x, tau=0.5, v_th=0.4).flatten().tolist()
        True
    """
    if x_t.dim() < 2 or x_t.shape[0] != 1:
        raise ValueError(f"lif_step expects one time step [1, N, ...], got shape {tuple(x_t.shape)}")
    if u_prev is None:
        spikes, u = _lif(x_t, tau=tau, v_th=v_th, return_membrane=True)
        return spikes, u[0]
    check_carried(u_prev, x_t.shape[1:])
    spikes, u = _lif(x_t, tau=tau, v_th=v_th, u0=u_prev, return_membrane=True)
    return spikes, u[0]
