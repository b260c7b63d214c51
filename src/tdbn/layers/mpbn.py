"""MPBN: a LIF neuron whose membrane potential is batch-normalized before the threshold (docs/method.md,
"Successors").

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
from torch import nn

from ..functional import surrogate as _surrogate
from ..functional.params import LIFParameters
from .neuron import LIF
from .recompute import recomputing
from .temporal_norm import step_moments, update_running

Tensor = torch.Tensor


class _Fire(torch.autograd.Function):
    """``1[d > 0]`` with the surrogate derivative of Eq. 16 in backward."""

    @staticmethod
    def forward(ctx, d: Tensor, surrogate: str, width: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(d)
        ctx.surrogate, ctx.width = surrogate, width
        return (d > 0).to(d.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (d,) = ctx.saved_tensors
        return g * _surrogate.get(ctx.surrogate)(d, ctx.width), None, None


class MPBNLIF(LIF):
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
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.process_group: dist.ProcessGroup | None = None  # set by tdbn.convert_sync_tdbn
        self.sync = False

    def synchronized(self) -> bool:
        return (self.sync and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 3 or x.shape[2] != self.num_features:
            raise ValueError(f"MPBNLIF({self.num_features}) expects [T, N, {self.num_features}, ...], got shape "
                             f"{tuple(x.shape)}")

    def margin(self, u: Tensor, *, batch: bool, count: bool = False) -> Tensor:
        """``u_hat - v_th`` of one step ``u [N, C, ...]`` (the neuron fires where it is > 0), as one multiply-add:
        with the batch statistics of ``u`` (``batch``; ``count``: update the running statistics with them) or with
        the running statistics."""
        if batch:
            mean, var, n = step_moments(u.unsqueeze(0), self.process_group, synchronized=self.synchronized())
            mean, var = mean[0], var[0]
            if count:
                update_running(self.running_mean, self.running_var, mean, var, n, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale - self.params.v_th
        shape = (1, self.num_features) + (1,) * (u.dim() - 2)
        return torch.addcmul(shift.view(shape), u, scale.view(shape))

    def step(self, x_t: Tensor, u_prev: Tensor | None, o_prev: Tensor | None, *, batch: bool = False,
             count: bool = False) -> tuple[Tensor, Tensor]:
        """One step from the carried potential ``u_prev`` and spikes ``o_prev`` (None: from rest): ``(o_t, u_t)``."""
        p = self.params
        u = x_t if u_prev is None else torch.addcmul(x_t, u_prev, 1 - o_prev, value=p.tau)
        o = _Fire.apply(self.margin(u, batch=batch, count=count), p.surrogate, p.surrogate_width)
        return o, u

    def forward_with_membrane(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Spikes and the potentials ``u`` (before normalization and reset), both ``[T, N, ...]``."""
        self._check(x)
        batch = self.training
        count = batch and not recomputing()
        if count:
            self.num_batches_tracked.add_(1)
        u = o = None
        spikes, us = [], []
        for t in range(x.shape[0]):
            o, u = self.step(x[t], u, o, batch=batch, count=count)
            spikes.append(o)
            us.append(u)
        return torch.stack(spikes), torch.stack(us).detach()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_membrane(x)[0]

    @torch.no_grad()
    def threshold(self) -> Tensor:
        """The per-channel threshold on ``u`` in evaluation mode (``gamma > 0``; NaN where ``gamma == 0``, and
        for ``gamma < 0`` the neuron fires below it)."""
        sd = torch.sqrt(self.running_var + self.eps)
        return self.running_mean + sd * (self.v_th - self.bias) / self.weight

    def extra_repr(self) -> str:
        return f"{self.num_features}, " + super().extra_repr() + (", sync=True" if self.sync else "")
