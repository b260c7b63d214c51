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
:mod:`tdbn.functional.units` (tdBN followed by LIF) store none and recompute ``u``.

This module holds the one plain-PyTorch definition of each recursion, ``_integrate_aten`` (Eq. 1-3) and
``_bptt_aten`` (Eq. 14-18): the reference implementation that the compiled CPU kernels
(:mod:`tdbn.functional.native`, bit-identical) and the Triton kernels (:mod:`tdbn.functional.lif_triton`) are
tested against. They use only float operations that the CPU vectorizes, and the forward pass equals the naive
loop bit for bit. ``_integrate`` and ``_bptt`` pick the compiled kernels on CPU tensors they can index and the
reference otherwise; the operators of :mod:`tdbn.functional.units` call them.
"""

from __future__ import annotations

import torch

from . import native as _native
from . import surrogate as _surrogate
from .params import DEFAULT_LIF, LIFParameters

Tensor = torch.Tensor

BACKENDS = ("torch", "triton")


def _check_input(x: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"LIF expects a time-first tensor [T, N, ...] with at least 2 dimensions, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"LIF expects a floating-point input, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"LIF needs at least one time step (T >= 1 in [T, N, ...]), got shape {tuple(x.shape)}")


def _integrate(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
    """:func:`_integrate_aten`, or the same loop compiled (:mod:`.native`) on CPU tensors it can index."""
    if u is None and spikes is None:
        raise ValueError("_integrate: without u, spikes are the only output and must be given")
    if _native.usable_forward(x, u, spikes):
        _native.integrate(x, u, tau, v_th, spikes)
    else:
        _integrate_aten(x, u, tau, v_th, spikes)


def _integrate_aten(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
    """Membrane potentials of Eq. 1-2 written into ``u`` (which may be ``x`` itself, for an in-place update)::

        u[t] = x[t] + tau * u[t-1] * (1 - o[t-1]),     o[t] = 1[u[t] > v_th]   (Eq. 3)

    ``spikes`` (like ``x``), if given, receives ``o`` as 0/1 floats. The product ``(tau * u) * (1 - o)`` is exactly
    ``tau * u`` or 0, so ``u`` equals the naive loop's bit for bit: for 32/64-bit floats one ``addcmul``
    (``x + (tau * u) * keep``, rounded once like the loop's sum), for 16-bit floats (whose ``addcmul`` keeps
    ``tau * u`` unrounded) a separate product. Only float kernels, no bool tensors: on the CPU those are the
    vectorized ones.

    With ``u=None`` only ``spikes`` is written: two step-sized buffers take turns holding ``u[t]``, which saves
    the write (and allocation) of a ``[T, ...]`` tensor when nobody needs ``u`` (inference; training where the
    backward pass recomputes it). Same operations, so the same spikes bit for bit.
    """
    T = x.shape[0]
    if u is None:  # spikes given: _integrate checked
        bufs = (torch.empty_like(x[0]), torch.empty_like(x[0])) if T > 1 else ()
        state = lambda t: x[0] if t == 0 else bufs[t % 2]  # noqa: E731
    else:
        if u is not x:
            u[0].copy_(x[0])
        state = u.__getitem__
    keep = torch.empty_like(x[0]) if T > 1 else None
    one_op = x.dtype in (torch.float32, torch.float64)
    for t in range(T - 1):
        prev, cur = state(t), state(t + 1)
        if u is None:  # before the buffer is reused
            torch.gt(prev, v_th, out=spikes[t])
        torch.le(prev, v_th, out=keep)  # 1 - o[t]: the hard reset
        if one_op:
            torch.addcmul(x[t + 1], prev, keep, value=tau, out=cur)
        else:
            torch.add(x[t + 1], torch.mul(prev, tau).mul_(keep), out=cur)
    if u is None:
        torch.gt(state(T - 1), v_th, out=spikes[T - 1])
    elif spikes is not None:
        torch.gt(u, v_th, out=spikes)


def check_backend(backend: str, x: Tensor | None = None) -> None:
    """Raise ``ValueError`` for an unknown backend, a missing ``triton`` package or a device it cannot run on."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown LIF backend {backend!r}; valid: {list(BACKENDS)}")
    if backend == "triton":
        try:
            from . import lif_triton
        except ImportError as err:
            raise ValueError(
                f"backend='triton' needs the triton package ({err}); install it with pip install 'tdbn[triton]' "
                "or use backend='torch'"
            ) from None
        if x is not None:
            lif_triton.check_device(x)


def lif_forward_reference(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
    """Membrane potentials and spikes of Eq. 1-3, no autograd bookkeeping. Returns ``(spikes, u)``."""
    u = torch.empty_like(x)
    spikes = torch.empty_like(x)
    _integrate(x, u, tau, v_th, spikes)
    return spikes, u


def _bptt(
    grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str, *, reuse_u: bool = False
) -> Tensor:
    """:func:`_bptt_aten`, or the same loop compiled (:mod:`.native`) on CPU tensors it can index."""
    if _native.supports_backward(u.dtype, surrogate) and _native.usable(grad_spikes, u):
        grad_x = u if reuse_u else torch.empty_like(u)
        _native.bptt(grad_spikes, u, grad_x, tau, v_th, width, surrogate)
        return grad_x
    return _bptt_aten(grad_spikes, u, tau, v_th, width, surrogate, reuse_u=reuse_u)


def _bptt_aten(
    grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str, *, reuse_u: bool = False
) -> Tensor:
    """``dL/dx`` by the reverse-time recursion of the module docstring (Eq. 14-15, 18). With ``reuse_u`` the
    result overwrites ``u`` (step t is written once ``u[t]`` is no longer needed), saving a buffer."""
    T = u.shape[0]
    grad_x = u if reuse_u else torch.empty_like(u)
    sg_fn = _surrogate.get(surrogate)
    rect = torch.empty_like(u[0]) if surrogate == "rectangle" else None
    keep = torch.empty_like(u[0]) if T > 1 else None
    go = torch.empty_like(u[0]) if T > 1 else None
    for t in range(T - 1, -1, -1):
        ut = u[t]
        if rect is not None:  # Eq. 16: (1/a) * 1[|u - v_th| < a/2], as a 0/1 float mask
            torch.sub(ut, v_th, out=rect).abs_()
            torch.lt(rect, 0.5 * width, out=rect)
            sg = rect.mul_(1.0 / width) if width != 1.0 else rect
        else:
            sg = sg_fn(ut - v_th, width)
        if t == T - 1:
            torch.mul(grad_spikes[t], sg, out=grad_x[t])
            continue
        gn = grad_x[t + 1]  # gu[t+1]
        torch.addcmul(grad_spikes[t], ut, gn, value=-tau, out=go)  # reset path: dL/do[t] - tau * u[t] * gu[t+1]
        go.mul_(sg)
        torch.le(ut, v_th, out=keep)  # 1 - o[t]; the last use of u[t]
        torch.addcmul(go, keep, gn, value=tau, out=grad_x[t])  # + decay path tau * (1 - o[t]) * gu[t+1]
    return grad_x


def lif(
    x: Tensor,
    params: LIFParameters | None = None,
    *,
    tau: float | None = None,
    v_th: float | None = None,
    surrogate_width: float | None = None,
    surrogate: str | None = None,
    return_membrane: bool = False,
    backend: str = "torch",
) -> Tensor | tuple[Tensor, Tensor]:
    """Run iterative LIF neurons over time (Eq. 1-3) with exact BPTT (Eq. 14-18), as the custom operator
    ``torch.ops.tdbn.lif_forward`` (:mod:`tdbn.functional.units`).

    Args:
        x: input currents ``[T, N, ...]`` (any trailing shape), floating point.
        params: the neuron's parameters (:class:`~tdbn.functional.params.LIFParameters`; default
            :data:`~tdbn.functional.params.DEFAULT_LIF`). The keywords below override single fields.
        tau: membrane decay in [0, 1).
        v_th: firing threshold (> 0); a neuron fires when ``u > v_th``.
        surrogate_width: width ``a`` of the surrogate derivative (Eq. 16).
        surrogate: surrogate shape, one of ``tdbn.functional.surrogate.SURROGATES``.
        return_membrane: also return the membrane potentials ``u`` (before reset, detached), for analysis.
        backend: ``"torch"`` (default: the compiled CPU kernels on the CPU, the Triton kernels on CUDA, the plain
            PyTorch reference elsewhere) or ``"triton"`` (the Triton kernels explicitly:
            :mod:`tdbn.functional.lif_triton`).

    Storage for backward: ``u`` (one tensor the size of ``x``) when ``x`` needs a gradient, nothing otherwise.
    After a tdBN, use :func:`tdbn.functional.units.td_bn_lif`, which stores no ``u``.

    Returns:
        spikes ``[T, N, ...]`` with values 0/1 in ``x``'s dtype, or ``(spikes, u)``.

    Example:
        >>> x = torch.tensor([[0.3], [0.3], [0.3]])  # [T=3, N=1]
        >>> lif(x, tau=0.5, v_th=0.4).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    _check_input(x)
    p = resolve_params(params, tau=tau, v_th=v_th, surrogate_width=surrogate_width, surrogate=surrogate)
    if backend != "torch":
        check_backend(backend, x)
    from .units import lif_op  # the operators live beside the other units (and import this module's kernels)

    return lif_op(x, p, return_membrane=return_membrane, backend=backend)


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
