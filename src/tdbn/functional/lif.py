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
membrane potentials ``u`` (spikes are recomputed as ``u > v_th``), so the function saves at most one tensor
the size of its input, where autograd over the Python loop keeps several per step; the units of
:mod:`tdbn.operators.unit_ops` (tdBN followed by LIF) store none and recompute ``u``.

The recursions themselves live in :mod:`tdbn.operators.recursions` (the plain-PyTorch reference) and in the
device kernels (:mod:`tdbn.operators.cpu`, :mod:`tdbn.operators.cuda_lif`); :func:`lif` runs them through the
operator of :mod:`tdbn.operators.unit_ops`.
"""

from __future__ import annotations

import torch

from . import surrogate as _surrogate
from .params import DEFAULT_LIF, LIFParameters
from ..operators.unit_ops import lif_op

Tensor = torch.Tensor

def _check_input(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"LIF expects a time-first tensor [T, N, ...] with at least 2 dimensions, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"LIF expects a floating-point input, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"LIF needs at least one time step (T >= 1 in [T, N, ...]), got shape {tuple(x.shape)}")


def lif(
    x: Tensor,
    params: LIFParameters | None = None,
    *,
    tau: float | None = None,
    v_th: float | None = None,
    surrogate_width: float | None = None,
    surrogate: str | None = None,
    u0: Tensor | None = None,
    return_membrane: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run iterative LIF neurons over time (Eq. 1-3) with exact BPTT (Eq. 14-18), as the custom operator
    ``torch.ops.tdbn.lif_forward`` (:mod:`tdbn.operators.unit_ops`): the compiled C kernels on the CPU, the Triton
    kernels on CUDA (:mod:`tdbn.operators.cuda_lif`), the plain-PyTorch reference elsewhere and under
    :func:`tdbn.operators.use_reference`.

    Args:
        x: input currents ``[T, N, ...]`` (any trailing shape), floating point.
        params: the neuron's parameters (:class:`~tdbn.functional.params.LIFParameters`; default
            :data:`~tdbn.functional.params.DEFAULT_LIF`). The keywords below override single fields.
        tau: membrane decay in [0, 1).
        v_th: firing threshold (> 0); a neuron fires when ``u > v_th``.
        surrogate_width: width ``a`` of the surrogate derivative (Eq. 16).
        surrogate: surrogate shape, one of ``tdbn.functional.surrogate.SURROGATES``.
        u0: the membrane potential ``[N, ...]`` before the first step (after the step before it, before that step's
            reset), to continue a sequence; None: from rest (``u[-1] = 0``). ``lif(x[k:], u0=u[k-1])`` equals
            ``lif(x)[k:]`` bit for bit, and ``u0`` gets its gradient (Eq. 14-15 one step back).
        return_membrane: also return the membrane potentials ``u`` (before reset, detached), for analysis; ``u[-1]``
            is the state to carry into the next call (Norse's ``(input, state) -> (output, state)``).

    Storage for backward: ``u`` (one tensor the size of ``x``) when ``x`` needs a gradient, nothing otherwise.
    After a tdBN, use :func:`tdbn.operators.unit_ops.td_bn_lif`, which stores no ``u``.

    Returns:
        spikes ``[T, N, ...]`` with values 0/1 in ``x``'s dtype, or ``(spikes, u)``.

    Example:
        >>> x = torch.tensor([[0.3], [0.3], [0.3]])  # [T=3, N=1]
        >>> lif(x, tau=0.5, v_th=0.4).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    _check_input(x)
    p = resolve_params(params, tau=tau, v_th=v_th, surrogate_width=surrogate_width, surrogate=surrogate)
    if u0 is not None and u0.shape != x.shape[1:]:
        raise ValueError(f"LIF: the starting potential u0 of shape {tuple(u0.shape)} must have the shape of one step "
                         f"of the input, {tuple(x.shape[1:])}")
    return lif_op(x, p, u0=u0, return_membrane=return_membrane)


def resolve_params(params: LIFParameters | None = None, **fields) -> LIFParameters:
    """``params`` (default :data:`DEFAULT_LIF`) with the fields given as not-None keywords replaced."""
    p = DEFAULT_LIF if params is None else params
    changes = {k: v for k, v in fields.items() if v is not None}
    return p.replace(**changes) if changes else p


def lif_naive(
    x: Tensor, params: LIFParameters | None = None, *, tau: float | None = None, v_th: float | None = None,
    surrogate_width: float | None = None, surrogate: str | None = None,
) -> Tensor:
    """The straightforward loop of Eq. 1-3 differentiated by autograd: the reference for ``lif``.

    Slow and memory hungry (autograd keeps several tensors per step); used by tests and benchmarks.
    """
    _check_input(x)
    p = resolve_params(params, tau=tau, v_th=v_th, surrogate_width=surrogate_width, surrogate=surrogate)
    tau, v_th, width, sg_fn = p.tau, p.v_th, p.surrogate_width, _surrogate.get(p.surrogate)

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
