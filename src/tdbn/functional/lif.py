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
the size of its input, where autograd over the Python loop keeps several per step; none when the input is a
tdBN output, from which ``u`` is recomputed (:mod:`tdbn.functional.fused`). The kernels use only float
operations that the CPU vectorizes, and the forward pass equals the naive loop bit for bit. On CPU tensors the
same loops run compiled (:mod:`tdbn.functional.native`: one pass over memory instead of a few ATen operations
per time step, bit-identical); the ATen loops (``_integrate_aten``, ``_bptt_aten``) serve every other case.
Under ``torch.compile`` the same recursions are written without ``out=`` arguments, which the compiler fuses.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import fused as _fused
from . import native as _native
from . import surrogate as _surrogate

Tensor = torch.Tensor

BACKENDS = ("torch", "triton")


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


def _kernels(backend: str):
    """``(integrate, bptt)`` of a backend: the torch kernels above or the Triton ones (:mod:`.lif_triton`)."""
    if backend == "torch":
        return _integrate, _bptt
    from . import lif_triton  # imported on first use: triton is an optional dependency

    return lif_triton.integrate, lif_triton.bptt


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


def _integrate_traced(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
    """:func:`_integrate` without ``out=`` arguments, the form ``torch.compile`` fuses into one loop over the
    neurons (the same floating-point operations). Returns ``(spikes, u)``."""
    us, spikes = [], []
    for t in range(x.shape[0]):
        if t == 0:
            u = x[0]
        else:
            b = us[-1] * tau
            u = x[t] + (b - b * spikes[-1])  # tau * u * (1 - o), exactly
        us.append(u)
        spikes.append((u > v_th).to(x.dtype))
    return torch.stack(spikes), torch.stack(us)


def _bptt_traced(grad_spikes: Tensor, u: Tensor, tau: float, v_th: float, width: float, surrogate: str) -> Tensor:
    """:func:`_bptt` without ``out=`` arguments, for ``torch.compile``."""
    sg_fn = _surrogate.get(surrogate)
    grads: list[Tensor] = []
    for t in range(u.shape[0] - 1, -1, -1):
        ut = u[t]
        sg = sg_fn(ut - v_th, width)
        if not grads:
            grads.append(grad_spikes[t] * sg)
            continue
        gn = grads[-1]
        go = grad_spikes[t] - (tau * ut) * gn
        grads.append(go * sg + (gn * (ut <= v_th).to(u.dtype)) * tau)
    return torch.stack(grads[::-1])


class LIFFunction(torch.autograd.Function):
    """Multi-step LIF with the hand-written BPTT backward described in the module docstring.

    Storage: when the input can be recomputed bit-exactly (it is a tdBN output, or a residual sum of such;
    :func:`tdbn.functional.fused.recompute_source`), no membrane potential is saved and the backward rebuilds
    ``u`` from that source; otherwise ``u`` is saved. When ``u`` is neither saved nor asked for
    (``keep_u=False``), the torch kernels do not even store it over time, and the second output is empty. The spikes are kept as a bool mask on the node, for the
    layers that save them (:func:`tdbn.functional.fused.spike_mask`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, tau: float, v_th: float, width: float, surrogate: str, backend: str = "torch",
        keep_u: bool = True,
    ):
        ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, ctx.backend = tau, v_th, width, surrogate, backend
        # compiling, any backend: the compiler generates the loop's kernel and plans storage itself (saving x
        # instead of u measured no better)
        if torch.compiler.is_compiling():
            spikes, u = _integrate_traced(x, tau, v_th)
            ctx.save_for_backward(u)
            ctx.mark_non_differentiable(u)
            return spikes, u
        ctx.source = _fused.recompute_source(x) if ctx.needs_input_grad[0] else None
        spikes = torch.empty_like(x)  # keeps a channels-last layout
        if backend == "torch" and not keep_u and (ctx.source is not None or not ctx.needs_input_grad[0]):
            _integrate(x, None, tau, v_th, spikes)
            u = x.new_empty(0)
        else:
            u = torch.empty_like(spikes)
            _kernels(backend)[0](x, u, tau, v_th, spikes)
        ctx.save_for_backward(u if ctx.source is None else None)
        if ctx.needs_input_grad[0] and _fused.lean_enabled():
            _fused.mark_spikes(ctx, spikes)
        ctx.mark_non_differentiable(u)
        return spikes, u

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: Tensor, _grad_u: Tensor | None):  # type: ignore[override]
        if torch.compiler.is_compiling():
            (u,) = ctx.saved_tensors
            grad_x = _bptt_traced(grad_spikes, u, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate)
            return grad_x, None, None, None, None, None, None
        integrate, bptt = _kernels(ctx.backend)
        if ctx.source is not None and ctx.backend == "torch" and _native.usable(grad_spikes):
            grad_x = _fused.lif_backward_through_td_batch_norm(
                ctx.source, grad_spikes, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate
            )
            if grad_x is not None:
                return grad_x, None, None, None, None, None, None
        if ctx.source is not None:
            u = _fused.recompute(ctx.source)  # the LIF input again, a fresh tensor
            integrate(u, u, ctx.tau, ctx.v_th)  # -> membrane potentials, in place
        else:
            (u,) = ctx.saved_tensors
        # a recomputed u is ours to overwrite: the gradient takes its place
        grad_x = bptt(grad_spikes, u, ctx.tau, ctx.v_th, ctx.width, ctx.surrogate, reuse_u=ctx.source is not None)
        return grad_x, None, None, None, None, None, None


def lif(
    x: Tensor,
    *,
    tau: float = 0.25,
    v_th: float = 0.5,
    width: float = 1.0,
    surrogate: str = "rectangle",
    return_membrane: bool = False,
    backend: str = "torch",
) -> Tensor | tuple[Tensor, Tensor]:
    """Run iterative LIF neurons over time (Eq. 1-3) with exact BPTT (Eq. 14-18).

    Args:
        x: input currents ``[T, N, ...]`` (any trailing shape), floating point.
        tau: membrane decay in [0, 1).
        v_th: firing threshold (> 0); a neuron fires when ``u > v_th``.
        width: width ``a`` of the surrogate derivative (Eq. 16).
        surrogate: surrogate shape, one of ``tdbn.functional.surrogate.SURROGATES``.
        return_membrane: also return the membrane potentials ``u`` (before reset), for analysis.
        backend: ``"torch"`` (default; any device) or ``"triton"`` (one fused kernel per pass over time, CUDA;
            :mod:`tdbn.functional.lif_triton`). Applies to eager execution: under ``torch.compile`` the
            compiler generates the kernel for the time loop itself, whatever the backend.

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
    # names always; package and device only for triton in eager mode (compiling ignores the backend, see above)
    if backend not in BACKENDS or (backend != "torch" and not torch.compiler.is_compiling()):
        check_backend(backend, x)
    spikes, u = LIFFunction.apply(x, float(tau), float(v_th), float(width), surrogate, backend, return_membrane)
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
