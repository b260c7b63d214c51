"""The LIF recursions of Eq. 1-3 (forward) and Eq. 14-18 (backward, BPTT) on ``[T, N, ...]`` tensors.

This module holds the one plain-PyTorch definition of each recursion, :func:`integrate_reference` and
:func:`bptt_reference`: the reference that the compiled CPU kernels (:mod:`tdbn.operators.cpu`,
bit-identical) and the Triton kernels (:mod:`tdbn.operators.cuda_lif`) are tested against. They use only float
operations that the CPU vectorizes, and the forward pass equals the naive loop bit for bit. They are the
``integrate`` and ``bptt`` of :mod:`tdbn.operators.reference`; the compiled CPU kernels fall back to them for
operands they cannot index (:func:`tdbn.operators.cpu.integrate`, :func:`tdbn.operators.cpu.bptt`).
"""

from __future__ import annotations

import torch

from . import surrogate as _surrogate

Tensor = torch.Tensor


def integrate_reference(x: Tensor, u: Tensor | None, tau: float, v_th: float, spikes: Tensor | None = None) -> None:
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
    if u is None:  # spikes given: integrate checked
        bufs = (torch.empty_like(x[0]), torch.empty_like(x[0])) if T > 1 else ()
        state = lambda t: x[0] if t == 0 else bufs[t % 2]  # noqa: E731
    else:
        if u is not x:
            u[0].copy_(x[0])
        state = u.__getitem__
    keep = torch.empty_like(x[0]) if T > 1 else None
    for t in range(T - 1):
        prev, cur = state(t), state(t + 1)
        if u is None:  # before the buffer is reused
            torch.gt(prev, v_th, out=spikes[t])
        step_reference(x[t + 1], prev, tau, v_th, out=cur, keep=keep)
    if u is None:
        torch.gt(state(T - 1), v_th, out=spikes[T - 1])
    elif spikes is not None:
        torch.gt(u, v_th, out=spikes)


def step_reference(x_t: Tensor, u_prev: Tensor, tau: float, v_th: float, *, out: Tensor | None = None,
                   keep: Tensor | None = None) -> Tensor:
    """One step of Eq. 1-2, ``x[t] + tau * u[t-1] * (1 - o[t-1])``, with the float operations of every step of
    :func:`integrate_reference` (``u_prev`` in ``x_t``'s dtype); ``out`` and ``keep`` (a buffer for ``1 - o``)
    are made when not given."""
    keep = torch.le(u_prev, v_th, out=keep) if keep is not None else torch.le(u_prev, v_th).to(x_t.dtype)
    if x_t.dtype in (torch.float32, torch.float64):  # 1 - o[t-1]: the hard reset
        return torch.addcmul(x_t, u_prev, keep, value=tau, out=out)
    return torch.add(x_t, torch.mul(u_prev, tau).mul_(keep), out=out)


def lif_forward_reference(x: Tensor, tau: float, v_th: float) -> tuple[Tensor, Tensor]:
    """Membrane potentials and spikes of Eq. 1-3, no autograd bookkeeping. Returns ``(spikes, u)``."""
    u = torch.empty_like(x)
    spikes = torch.empty_like(x)
    integrate_reference(x, u, tau, v_th, spikes)
    return spikes, u


def bptt_reference(
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
