"""Iterative leaky integrate-and-fire neuron with exact BPTT (paper Eq. 1-3, 14-18).

Forward, for t = 0 .. T-1 with ``u[-1] = 0, o[-1] = 0``::

    u[t] = tau * u[t-1] * (1 - o[t-1]) + x[t]
    o[t] = 1[u[t] > v_th]                                   (strictly greater)

Backward (full BPTT, hand-written, walking time in reverse). With ``gu[t] = dL/du[t]`` and
``go[t] = dL/do[t]``::

    go[t] = dL/do[t]|_out - tau * u[t] * gu[t+1]            (reset path, Eq. 15)
    gu[t] = go[t] * sg(u[t] - v_th) + tau * (1 - o[t]) * gu[t+1]   (decay path, Eq. 14)
    dL/dx[t] = gu[t]

where ``sg`` is the surrogate derivative (Eq. 16, rectangular by default). The backward needs only the
membrane potentials ``u`` (spikes are recomputed as ``u > v_th``), so the function saves one tensor the size
of its input, where autograd over the Python loop keeps several per step.
"""

from __future__ import annotations

import torch

from . import surrogate as _surrogate

Tensor = torch.Tensor


def check_lif_args(tau: float, v_th: float, width: float) -> None:
    """Raise ``ValueError`` naming the valid range for any bad neuron hyper-parameter."""
    if not (0.0 <= float(tau) < 1.0):
        raise ValueError(f"tau must lie in [0, 1) (decay factor of Eq. 1), got {tau}")
    if not float(v_th) > 0.0:
        raise ValueError(f"v_th must be > 0, got {v_th}")
    if not float(width) > 0.0:
        raise ValueError(f"surrogate width must be > 0 (a in Eq. 16), got {width}")


def _check_input(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"LIF expects a time-first tensor [T, N, ...] with at least 2 dimensions, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"LIF expects a floating-point input, got dtype {x.dtype}")


def lif_forward_reference(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
    """Membrane potentials and spikes of Eq. 1-3, no autograd bookkeeping. Returns ``(spikes, u)``."""
    u = torch.empty_like(x)
    u[0] = x[0]
    for t in range(1, x.shape[0]):
        prev = u[t - 1]
        # u[t] = x[t] + tau * u[t-1] * (1 - o[t-1]); the reset zeroes u where the neuron fired
        torch.add(x[t], prev * (prev <= v_th), alpha=tau, out=u[t])
    return (u > v_th).to(x.dtype), u


class LIFFunction(torch.autograd.Function):
    """Multi-step LIF with the hand-written BPTT backward described in the module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, tau: float, v_th: float, width: float, surrogate: str):  # type: ignore[override]
        spikes, u = lif_forward_reference(x, tau, v_th)
        ctx.save_for_backward(u)
        ctx.tau, ctx.v_th, ctx.width, ctx.surrogate = tau, v_th, width, surrogate
        ctx.mark_non_differentiable(u)
        return spikes, u

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, _grad_u: Tensor | None):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        tau, v_th, width = ctx.tau, ctx.v_th, ctx.width
        sg_fn = _surrogate.get(ctx.surrogate)
        grad_x = torch.empty_like(u)
        T = u.shape[0]
        gu_next = None
        for t in range(T - 1, -1, -1):
            ut = u[t]
            sg = sg_fn(ut - v_th, width)
            if gu_next is None:  # last step: no future
                torch.mul(grad_spikes[t], sg, out=grad_x[t])
            else:
                go = grad_spikes[t] - tau * ut * gu_next  # reset path
                keep = ut <= v_th  # 1 - o[t]
                torch.add(go * sg, gu_next * keep, alpha=tau, out=grad_x[t])  # decay path
            gu_next = grad_x[t]
        return grad_x, None, None, None, None


def lif(
    x: Tensor,
    *,
    tau: float = 0.25,
    v_th: float = 0.5,
    width: float = 1.0,
    surrogate: str = "rectangle",
    return_membrane: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run iterative LIF neurons over time (Eq. 1-3) with exact BPTT (Eq. 14-18).

    Args:
        x: input currents ``[T, N, ...]`` (any trailing shape), floating point.
        tau: membrane decay in [0, 1).
        v_th: firing threshold (> 0); a neuron fires when ``u > v_th``.
        width: width ``a`` of the surrogate derivative (Eq. 16).
        surrogate: surrogate shape, one of ``tdbn.functional.surrogate.SURROGATES``.
        return_membrane: also return the membrane potentials ``u`` (before reset), for analysis.

    Returns:
        spikes ``[T, N, ...]`` with values 0/1 in ``x``'s dtype, or ``(spikes, u)``.

    Example:
        >>> x = torch.tensor([[0.3], [0.3], [0.3]])  # [T=3, N=1]
        >>> lif(x, tau=0.5, v_th=0.4).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    _check_input(x)
    check_lif_args(tau, v_th, width)
    _surrogate.get(surrogate)
    spikes, u = LIFFunction.apply(x, float(tau), float(v_th), float(width), surrogate)
    return (spikes, u) if return_membrane else spikes


def lif_naive(
    x: Tensor, *, tau: float = 0.25, v_th: float = 0.5, width: float = 1.0, surrogate: str = "rectangle"
) -> Tensor:
    """The straightforward loop of Eq. 1-3 differentiated by autograd: the reference for ``lif``.

    Slow and memory hungry (autograd keeps several tensors per step); used by tests and benchmarks.
    """
    _check_input(x)
    check_lif_args(tau, v_th, width)
    sg_fn = _surrogate.get(surrogate)

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u: Tensor) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(u)
            return (u > v_th).to(u.dtype)

        @staticmethod
        def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
            (u,) = ctx.saved_tensors
            return g * sg_fn(u - v_th, width)

    u = torch.zeros_like(x[0])
    o = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u = tau * u * (1 - o) + x[t]
        o = _Spike.apply(u)
        out.append(o)
    return torch.stack(out)
