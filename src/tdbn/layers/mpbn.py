"""MPBN: a LIF neuron whose membrane potential is batch-normalized before the threshold (docs/method.md,
"8. Successors").

At every step ``t`` (Eq. 1-3 with one normalization between integration and firing)::

    u_t     = tau * u_{t-1} * (1 - o_{t-1}) + x_t          (the carried potential: before normalization)
    u_hat_t = gamma * (u_t - mean) / sqrt(var + eps) + beta  (per channel)
    o_t     = 1[u_hat_t > v_th]

In training ``mean`` and ``var`` are the batch statistics of ``u_t`` at that step (over batch and space; one
normalization shared by all steps, its running statistics updated once per step, as one ``BatchNorm`` called at
every step updates them); in evaluation the running statistics, so that ``o_t = 1[u_t > theta]`` with the
per-channel threshold ``theta = mean + sqrt(var + eps) * (v_th - beta) / gamma`` (for ``gamma > 0``): a plain LIF
after scaling the channel's input by ``v_th / theta`` (:func:`tdbn.fuse` does that where ``theta > 0``).
The gradient is the LIF's (Eq. 14-18 with the surrogate of Eq. 16) through the normalization, batch statistics
included.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..functional import surrogate as _surrogate
from ..functional.params import LIFParameters
from . import stepping
from .batch_state import Synchronizable, add_channel_state
from .neuron import LIF
from .recompute import recomputing
from .temporal_norm import step_moments, update_running

Tensor = torch.Tensor


def _affine(mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float, v_th: float) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``u_hat - v_th = scale * u + shift`` per channel."""
    scale = weight * torch.rsqrt(var + eps)
    return scale, bias - mean * scale - v_th


def _advance(x_t: Tensor, u_prev: Tensor | None, o_prev: Tensor | None, tau: float) -> Tensor:
    """``u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t`` (``x_t`` at the first step)."""
    return x_t if u_prev is None else torch.addcmul(x_t, u_prev, 1 - o_prev, value=tau)


def _margin(u: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    shape = (1, scale.shape[0]) + (1,) * (u.dim() - 2)
    return torch.addcmul(shift.view(shape), u, scale.view(shape))


def _steps(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, cfg: tuple, *,
           keep_u: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor, int]:
    """The MPBN neuron over the ``T`` steps of ``x``: ``(spikes, u or None, mean [T, C], var [T, C], count)``, with
    the batch statistics of each step (training) or the running ones; the potentials only when ``keep_u``."""
    tau, v_th, _, _, eps, batch, group, sync = cfg
    spikes = torch.empty_like(x)
    us = torch.empty_like(x) if keep_u else None
    means, variances = [], []
    u = o = None
    count = 0
    for t in range(x.shape[0]):
        u = _advance(x[t], u, o, tau)
        if batch:
            mean, var, count = step_moments(u.unsqueeze(0), group, synchronized=sync)
            mean, var = mean[0], var[0]
        else:
            mean, var = running_mean, running_var
        o = (_margin(u, *_affine(mean, var, weight, bias, eps, v_th)) > 0).to(x.dtype)
        spikes[t] = o
        if us is not None:
            us[t] = u
        means.append(mean)
        variances.append(var)
    return spikes, us, torch.stack(means), torch.stack(variances), count


def _grad_(buf: Tensor, g_spikes: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, cfg: tuple,
           count: int) -> tuple[Tensor, Tensor, Tensor]:
    """BPTT of the MPBN neuron, in place: ``buf`` holds the input ``x`` and is overwritten first by the potentials
    (recomputed step by step), then by ``dL/dx``, step ``t``'s gradient replacing ``u_t`` once ``u_t`` is no longer
    read (one buffer for the three). Returns ``(dL/dx, dL/dgamma, dL/dbeta)``; through the reset, the surrogate and
    each step's batch normalization (its gradient sums all-reduced when synchronized)."""
    tau, v_th, surrogate, width, eps, batch, group, sync = cfg
    sg = _surrogate.get(surrogate)
    T = buf.shape[0]
    o = None
    for t in range(T):  # the potentials again: u_t = x_t + tau * u_{t-1} * (1 - o_{t-1})
        if t:
            buf[t].addcmul_(buf[t - 1], 1 - o, value=tau)
        o = (_margin(buf[t], *_affine(mean[t], var[t], weight, bias, eps, v_th)) > 0).to(buf.dtype)
    del o
    dims = [0, *range(2, buf.dim() - 1)]
    shape = (1, weight.shape[0]) + (1,) * (buf.dim() - 3)
    gw, gb = torch.zeros_like(weight), torch.zeros_like(bias)
    gu_next = None
    # per step, with as few temporaries of the step's size alive at once as the maths allows (the gradient of
    # u_hat's normalization is a per-channel a * g + b * u + c, its sums taken from sum(g) and sum(g * u))
    for t in reversed(range(T)):
        u = buf[t]
        d = _margin(u, *_affine(mean[t], var[t], weight, bias, eps, v_th))
        fired = d > 0
        g = sg(d, width)  # do/du_hat
        del d
        g.mul_(g_spikes[t] if gu_next is None else g_spikes[t] - tau * u * gu_next)  # o_t also resets u_{t+1}
        inv = torch.rsqrt(var[t] + eps)
        s_g, s_gu = g.sum(dims), (g * u).sum(dims)
        s_gxhat = inv * (s_gu - mean[t] * s_g)  # sum(g * x_hat)
        gw += s_gxhat
        gb += s_g
        a = weight * inv  # dL/du = a * (g - mean(g) - x_hat * mean(g * x_hat)) with batch statistics
        if batch:
            sums = torch.stack([s_g, s_gxhat])
            if sync:
                dist.all_reduce(sums, group=group or dist.group.WORLD)
            m_g, m_gx = sums[0] / count, sums[1] / count
            b = -a * inv * m_gx
            c = -a * m_g - b * mean[t]
            g.mul_(a.view(shape)).add_(c.view(shape)).addcmul_(u, b.view(shape))
        else:
            g.mul_(a.view(shape))
        if gu_next is not None:
            g.addcmul_(gu_next, (~fired).to(g.dtype), value=tau)
        del fired
        buf[t] = g  # u_t is not read again
        gu_next = g
    return buf, gw, gb


class _Recurrence(torch.autograd.Function):
    """The MPBN neuron over ``T`` steps with a hand-written backward (BPTT through the reset, the surrogate and each
    step's batch normalization). Stores the input and the per-step statistics; backward recomputes the potentials
    (one buffer of the input's size, overwritten by the gradient) and runs the steps backwards. Equal to autograd
    through a literal transcription of the formula (tests, float64)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, cfg):  # type: ignore[override]
        spikes, us, mean, var, count = _steps(x, weight, bias, running_mean, running_var, cfg, keep_u=True)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.cfg, ctx.count = cfg, count
        ctx.mark_non_differentiable(us, mean, var)
        return spikes, us, mean, var, torch.tensor(count)

    @staticmethod
    def backward(ctx, g_spikes, _gu, _gmean, _gvar, _gcount):  # type: ignore[override]
        x, weight, bias, mean, var = ctx.saved_tensors
        gx, gw, gb = _grad_(x.clone(), g_spikes, weight, bias, mean, var, ctx.cfg, ctx.count)
        return gx, gw, gb, None, None, None


class MPBNLIF(Synchronizable, LIF):
    """LIF neurons with membrane potential batch normalization (MPBN) on ``[T, N, C, ...]``.

    Example:
        >>> lif = MPBNLIF(4)
        >>> lif(torch.randn(3, 2, 4, 5, 5)).shape
        torch.Size([3, 2, 4, 5, 5])
        >>> lif.threshold().shape  # the per-channel threshold of evaluation mode, on u
        torch.Size([4])
    """

    def __init__(self, num_features: int, params: LIFParameters | None = None, *, eps: float = 1e-5,
                 momentum: float = 0.1, **lif_fields):
        super().__init__(params, **lif_fields)
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        add_channel_state(self, num_features)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 3 or x.shape[2] != self.num_features:
            raise ValueError(f"MPBNLIF({self.num_features}) expects [T, N, {self.num_features}, ...], got shape "
                             f"{tuple(x.shape)}")

    def margin(self, u: Tensor) -> Tensor:
        """``u_hat - v_th`` of one step ``u [N, C, ...]`` with the running statistics (the neuron fires where it is
        > 0), as the forward pass computes it in evaluation mode."""
        return _margin(u, *_affine(self.running_mean, self.running_var, self.weight, self.bias, self.eps,
                                   self.params.v_th))

    def step(self, x_t: Tensor, u_prev: Tensor | None, o_prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """One evaluation-mode step from the carried potential ``u_prev`` and spikes ``o_prev`` (None: from rest):
        ``(o_t, u_t)``, computed as the forward pass computes that step."""
        u = _advance(x_t, u_prev, o_prev, self.params.tau)
        return (self.margin(u) > 0).to(x_t.dtype), u

    def _cfg(self) -> tuple:
        p = self.params
        return (p.tau, p.v_th, p.surrogate, p.surrogate_width, self.eps, self.training, self.process_group,
                self.training and self.synchronized())

    def forward_with_membrane(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Spikes and the potentials ``u`` (before normalization and reset), both ``[T, N, ...]``."""
        self._check(x)
        spikes, u, mean, var, count = _Recurrence.apply(x, self.weight, self.bias, self.running_mean,
                                                        self.running_var, self._cfg())
        self.count_lean_batch(mean, var, int(count))
        return spikes, u

    # ---- the lean unit's share (tdbn.layers.temporal_norm.norm_lif: BN and this neuron as one autograd node) ----
    def lean_steps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int, tuple]:
        """Forward of the neuron inside a lean unit: ``(spikes, mean, var, count, cfg)``, no potentials kept;
        ``cfg`` is what :meth:`lean_grad_` takes back."""
        self._check(x)
        cfg = self._cfg()
        spikes, _, mean, var, count = _steps(x, self.weight, self.bias, self.running_mean, self.running_var, cfg,
                                             keep_u=False)
        return spikes, mean, var, count, cfg

    def lean_grad_(self, buf: Tensor, g_spikes: Tensor, mean: Tensor, var: Tensor, count: int,
                   cfg: tuple) -> tuple[Tensor, Tensor, Tensor]:
        """Backward of the neuron inside a lean unit, in place over its input ``buf``: ``(dL/dx, dL/dgamma,
        dL/dbeta)``."""
        return _grad_(buf, g_spikes, self.weight.detach(), self.bias.detach(), mean, var, cfg, count)

    def count_lean_batch(self, mean: Tensor, var: Tensor, count: int) -> None:
        """Count a training batch and move the running statistics by each step's (once: not again when a unit is
        recomputed in backward), as one normalization called at every step does."""
        if self.training and not recomputing():
            self.num_batches_tracked.add_(1)
            for t in range(mean.shape[0]):
                update_running(self.running_mean, self.running_var, mean[t], var[t], count, self.momentum)

    def forward(self, x: Tensor) -> Tensor:
        step = stepping.current()
        if step is not None and not self.training:  # one step of a stream: from the potential it carries
            return step.mpbn(self, x)
        return self.forward_with_membrane(x)[0]

    @torch.no_grad()
    def threshold(self) -> Tensor:
        """The per-channel threshold on ``u`` in evaluation mode (``gamma > 0``; NaN where ``gamma == 0``, and
        for ``gamma < 0`` the neuron fires below it)."""
        sd = torch.sqrt(self.running_var + self.eps)
        return self.running_mean + sd * (self.v_th - self.bias) / self.weight

    def extra_repr(self) -> str:
        return f"{self.num_features}, " + super().extra_repr() + (", sync=True" if self.sync else "")
