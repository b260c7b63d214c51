"""The normalizations that followed tdBN and look at time: TEBN, BNTT and TAB (docs/method.md, "8. Successors").

Each takes a time-first tensor, ``[T, N, C, H, W]`` (``dims=2``, the default) or ``[T, N, C]`` (``dims=1``), with
exactly the ``timesteps`` steps it was built for, and differs from tdBN in which values one statistic spans and which
parameters depend on the step:

========  ===========================================  =========================================================
norm      statistics of step ``t`` (per channel)        affine of step ``t``
========  ===========================================  =========================================================
``TEBN``  all steps, batch and space (as tdBN)          ``p_t * (gamma * x_hat + beta)``, ``p`` of shape ``[T]``
``BNTT``  step ``t`` alone, over batch and space        ``gamma_t * x_hat + beta_t``, each ``[T, C]``
``TAB``   steps ``0..t`` (causal), batch and space      ``p_t^2 * (gamma_t * x_hat + beta_t)``
========  ===========================================  =========================================================

``x_hat = (x - mean) / sqrt(var + eps)`` with the biased variance of the batch in training; in evaluation the
running statistics (per channel for TEBN, per step and channel for BNTT and TAB), which are updated as
``torch.nn.BatchNorm`` updates them (momentum, unbiased variance). None has tdBN's ``alpha * v_th`` factor.

Synchronized statistics (:func:`tdbn.convert_sync_tdbn`) all-reduce the per-step sums and sums of squares over the
process group with a differentiable all-reduce, so two processes with half the batch each compute what one process
computes with the whole batch. In training the units run these modules under recomputation
(:mod:`tdbn.layers.recompute`): the recomputation in backward does not count the batch a second time.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..operators.registration import LIFArgs
from ..operators.spike_ops import pack_spikes, unpack_spikes
from ..operators.unit_ops import affine_lif_backward, lif_forward
from .batch_state import Synchronizable
from .recompute import recomputing

Tensor = torch.Tensor


def step_sums(x: Tensor, group: dist.ProcessGroup | None = None, *, synchronized: bool = False) -> tuple[Tensor, int]:
    """Per step and channel of ``x [T, N, C, ...]``: the sums and sums of squares over batch and space, ``[2, T, C]``
    (one pass, over the contiguous last axis first: fast on the CPU; accumulated in float32 for 16-bit input, with no
    float32 copy of ``x``), and the number of values each spans; ``synchronized``: over the batches of all processes
    of ``group`` (default: the world), by a differentiable all-reduce."""
    T, N, C = x.shape[:3]
    v = x.reshape(T, N, C, -1)
    count = N * v.shape[-1]
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    sums = torch.stack([v.sum(3, dtype=acc).sum(1), v.square().sum(3, dtype=acc).sum(1)])
    if synchronized:
        from torch.distributed.nn.functional import all_reduce  # differentiable

        sums = all_reduce(sums, group=group or dist.group.WORLD)
        count *= dist.get_world_size(group)
    return sums, count


def moments(sums: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and biased variance from :func:`step_sums`: ``E[x^2] - E[x]^2`` (as the tdBN kernels compute it),
    clamped at 0."""
    mean = sums[0] / count
    return mean, (sums[1] / count - mean * mean).clamp_min(0)


def step_moments(x: Tensor, group: dist.ProcessGroup | None = None, *,
                 synchronized: bool = False) -> tuple[Tensor, Tensor, int]:
    """Per step and channel of ``x [T, N, C, ...]``: mean and biased variance over batch and space (``[T, C]``
    each) and the number of values each spans (:func:`step_sums`, :func:`moments`)."""
    sums, count = step_sums(x, group, synchronized=synchronized)
    return (*moments(sums, count), count)


@torch.no_grad()
def update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int | Tensor,
                   momentum: float) -> None:
    """``torch.nn.BatchNorm``'s momentum update of running statistics from a batch's ``mean`` and biased ``var``;
    ``count``: the values each statistic spans (for the unbiased variance), a number or a tensor broadcast against
    ``var``."""
    unbiased = var * (count / (count - 1)) if isinstance(count, Tensor) else var * (count / max(count - 1, 1))
    running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
    running_var.mul_(1 - momentum).add_(unbiased.detach().to(running_var.dtype), alpha=momentum)


class _TimeNorm(Synchronizable, nn.Module):
    """What TEBN, BNTT and TAB share: shape checks, statistics (local or synchronized), running updates."""

    def __init__(self, num_features: int, timesteps: int, *, dims: int = 2, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 ([T, N, C]) or 2 ([T, N, C, H, W]), got {dims}")
        self.dims = int(dims)
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.num_features = int(num_features)
        self.timesteps = int(timesteps)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    # ---- checks and statistics -------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.dim() != (5 if self.dims == 2 else 3):
            layout = "[T, N, C, H, W]" if self.dims == 2 else "[T, N, C]"
            raise ValueError(f"{name} (dims={self.dims}) expects a time-first tensor {layout}, got shape "
                             f"{tuple(x.shape)}; add the time axis first")
        if x.shape[2] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expects {self.num_features} channels at dim 2, got shape "
                             f"{tuple(x.shape)}")
        if x.shape[0] != self.timesteps:
            raise ValueError(f"{name} was built for T = {self.timesteps} steps (its parameters are per step), got "
                             f"{x.shape[0]} steps in shape {tuple(x.shape)}; build the model with timesteps="
                             f"{x.shape[0]}")

    def _sums(self, x: Tensor) -> tuple[Tensor, int]:
        return step_sums(x, self.process_group, synchronized=self.synchronized())

    def _batch_stats(self, step_mean: Tensor, step_var: Tensor, count: int) -> tuple[Tensor, Tensor, int | Tensor]:
        """The statistics this normalization applies, from every step's moments: ``(mean, var, n)``, ``n`` the
        values each spans (for the running variance)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if self.training:
            sums, count = self._sums(x)
            mean, var, n = self._batch_stats(*moments(sums, count), count)
            if self._count_batch():
                self._update(self.running_mean, self.running_var, mean, var, n)
        else:
            mean, var = self.running_mean, self.running_var
        return self._affine(x, *self._map(mean, var))

    def unit(self, z: Tensor, lif: nn.Module) -> Tensor:
        """``lif(self(z))`` in training as one autograd node (:class:`_NormLIF`): stores ``z`` and the per-step
        sums; backward recomputes the normalization and the membrane potentials in one buffer. Same values and
        gradients as the modules one after the other (tests)."""
        return self.junction(z, None, None, lif)

    def junction(self, za: Tensor, zb: Tensor | None, norm_b: "_TimeNorm | None", lif: nn.Module, *,
                 spikes_b: bool = False) -> Tensor:
        """``lif(self(za) + norm_b(zb))`` (``+ zb`` without ``norm_b``; nothing without ``zb``) in training as one
        autograd node, a residual junction (Fig. 5b); ``spikes_b``: ``zb`` holds 0/1 only (stored as bits)."""
        self._check(za)
        if norm_b is not None:
            norm_b._check(zb)
        params = [*self.parameters(), *(norm_b.parameters() if norm_b is not None else ())]
        spikes, sums_a, sums_b, counts = _NormLIF.apply(za, zb, self, norm_b, LIFArgs.of(lif.params),
                                                        bool(spikes_b), *params)
        for norm, sums, count in ((self, sums_a, int(counts[0])), (norm_b, sums_b, int(counts[1]))):
            if norm is not None and zb is not None or norm is self:
                if norm._count_batch():
                    mean, var, n = norm._batch_stats(*moments(sums, count), count)
                    norm._update(norm.running_mean, norm.running_var, mean, var, n)
        return spikes

    def _count_batch(self) -> bool:
        """Count this training batch (once: not again when the unit is recomputed in backward)."""
        if not self.training or recomputing():
            return False
        self.num_batches_tracked.add_(1)
        return True

    def _update(self, running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                count: int | Tensor) -> None:
        update_running(running_mean, running_var, mean, var, count, self.momentum)

    @staticmethod
    def _shape(x: Tensor, scale: Tensor) -> tuple[int, ...]:
        """The shape that broadcasts a ``[T, C]`` or ``[C]`` map against ``x [T, N, C, ...]``."""
        return (x.shape[0] if scale.dim() == 2 else 1, 1, x.shape[2]) + (1,) * (x.dim() - 3)

    @staticmethod
    def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """``scale * x + shift`` with ``scale``, ``shift`` of shape ``[T, C]`` or ``[C]`` (per step and channel), in
        ``x``'s dtype: one multiply-add, which keeps nothing of ``x``'s size for backward but ``x`` itself."""
        shape = _TimeNorm._shape(x, scale)
        # in x's dtype: under bf16 autocast the output stays 16-bit as the tdBN unit's does
        return torch.addcmul(shift.reshape(shape).to(x.dtype), x, scale.reshape(shape).to(x.dtype))

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` of ``y = scale * x + shift`` from the statistics (``[T, C]`` or ``[C]`` each)."""
        raise NotImplementedError

    def step_affine(self) -> tuple[Tensor, Tensor]:
        """The evaluation-mode map of each step, ``y = scale_t * x + shift_t``: ``(scale, shift)``, each
        ``[T, C]`` (what streaming applies at step ``t`` and what fusion folds when it does not depend on ``t``);
        the very expressions the forward pass evaluates."""
        scale, shift = self._map(self.running_mean, self.running_var)
        T, C = self.timesteps, self.num_features
        return scale.expand(T, C), shift.expand(T, C)

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, timesteps={self.timesteps}, dims={self.dims}, eps={self.eps}, "
             f"momentum={self.momentum}")
        return s + (", sync=True" if self.sync else "")


class TEBN(_TimeNorm):
    """Temporal effective batch normalization: tdBN's statistics (all steps, batch and space per channel, without
    ``alpha * v_th``), then a learned scale per time step, ``y_t = p_t * (gamma * x_hat_t + beta)``; ``p`` starts at 1.

    Example:
        >>> bn = TEBN(4, timesteps=3)
        >>> bn(torch.randn(3, 8, 4, 5, 5)).shape
        torch.Size([3, 8, 4, 5, 5])
    """

    def __init__(self, num_features: int, timesteps: int, **kw):
        super().__init__(num_features, timesteps, **kw)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.p = nn.Parameter(torch.ones(timesteps))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _batch_stats(self, step_mean: Tensor, step_var: Tensor, count: int) -> tuple[Tensor, Tensor, int]:
        mean = step_mean.mean(0)  # equal counts per step: the mean and variance over all steps
        var = step_var.mean(0) + (step_mean - mean).square().mean(0)
        return mean, var, count * step_mean.shape[0]

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.weight * torch.rsqrt(var + self.eps)
        p = self.p[:, None]
        return p * scale, p * (self.bias - mean * scale)


class BNTT(_TimeNorm):
    """Batch normalization through time: every step its own statistics (batch and space per channel) and its own
    affine, ``y_t = gamma_t * x_hat_t + beta_t``; running statistics per step.

    Example:
        >>> bn = BNTT(4, timesteps=3)
        >>> bn.weight.shape, bn.running_mean.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    def __init__(self, num_features: int, timesteps: int, **kw):
        super().__init__(num_features, timesteps, **kw)
        self.weight = nn.Parameter(torch.ones(timesteps, num_features))
        self.bias = nn.Parameter(torch.zeros(timesteps, num_features))
        self.register_buffer("running_mean", torch.zeros(timesteps, num_features))
        self.register_buffer("running_var", torch.ones(timesteps, num_features))

    def _batch_stats(self, step_mean: Tensor, step_var: Tensor, count: int) -> tuple[Tensor, Tensor, int]:
        return step_mean, step_var, count

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.weight * torch.rsqrt(var + self.eps)
        return scale, self.bias - mean * scale


class TAB(_TimeNorm):
    """Temporal accumulated batch normalization: the statistics of step ``t`` span the steps ``0..t`` (causal; batch
    and space per channel), each step has its own affine and running statistics, and a learned step weight ``p_t``
    enters squared, ``y_t = p_t^2 * (gamma_t * x_hat_t + beta_t)`` (``p`` starts at 1).

    Example:
        >>> TAB(4, timesteps=3, dims=1)(torch.randn(3, 8, 4)).shape
        torch.Size([3, 8, 4])
    """

    def __init__(self, num_features: int, timesteps: int, **kw):
        super().__init__(num_features, timesteps, **kw)
        self.weight = nn.Parameter(torch.ones(timesteps, num_features))
        self.bias = nn.Parameter(torch.zeros(timesteps, num_features))
        self.p = nn.Parameter(torch.ones(timesteps))
        self.register_buffer("running_mean", torch.zeros(timesteps, num_features))
        self.register_buffer("running_var", torch.ones(timesteps, num_features))

    def _batch_stats(self, step_mean: Tensor, step_var: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
        means, variances = [], []
        for t in range(step_mean.shape[0]):  # steps 0..t hold equal counts: combine their moments exactly
            m = step_mean[: t + 1].mean(0)
            means.append(m)
            variances.append(step_var[: t + 1].mean(0) + (step_mean[: t + 1] - m).square().mean(0))
        mean, var = torch.stack(means), torch.stack(variances)
        # step t's statistics span (t + 1) * count values
        n = torch.arange(1, step_mean.shape[0] + 1, dtype=var.dtype, device=var.device)[:, None] * count
        return mean, var, n

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.weight * torch.rsqrt(var + self.eps)
        p2 = self.p.square()[:, None]
        return p2 * scale, p2 * (self.bias - mean * scale)


TIME_NORMS = (TEBN, BNTT, TAB)


class _NormLIF(torch.autograd.Function):
    """``LIF(norm_a(za) [+ norm_b(zb) | + zb])`` for TEBN, BNTT or TAB in training (a unit, or a residual junction):
    forward stores ``za``, ``zb`` (its bits when it holds spikes) and the per-step sums; backward recomputes ``y``, the
    potentials and ``dL/dy`` in one buffer (``tdbn::affine_lif_backward``), turns it into ``dL/dza`` in place, and takes
    the statistics' and parameters' share through the small ``[T, C]`` graphs of the maps from the sums (their
    gradient all-reduced when synchronized)."""

    @staticmethod
    def forward(ctx, za, zb, norm_a, norm_b, lif, spike_b, *params):  # type: ignore[override]
        sums_a, count_a = norm_a._sums(za)
        y = norm_a._affine(za, *norm_a._map(*norm_a._batch_stats(*moments(sums_a, count_a), count_a)[:2]))
        sums_b, count_b = za.new_empty(0), 0
        if zb is not None:
            if norm_b is not None:
                sums_b, count_b = norm_b._sums(zb)
                sb, hb = norm_b._map(*norm_b._batch_stats(*moments(sums_b, count_b), count_b)[:2])
                shape = norm_b._shape(zb, sb)
                y.addcmul_(zb, sb.reshape(shape).to(zb.dtype)).add_(hb.reshape(shape).to(zb.dtype))
            else:
                y.add_(zb)
        spikes, _ = lif_forward(y, None, lif, False)
        stored_b = za.new_empty(0) if zb is None else pack_spikes(zb) if spike_b else zb
        ctx.save_for_backward(za, stored_b, sums_a, sums_b)
        ctx.norms, ctx.lif, ctx.counts, ctx.params = (norm_a, norm_b), lif, (count_a, count_b), params
        ctx.b = None if zb is None else (zb.shape, zb.dtype, spike_b)
        ctx.mark_non_differentiable(sums_a, sums_b)
        return spikes, sums_a, sums_b, torch.tensor([count_a, count_b])

    @staticmethod
    def backward(ctx, grad_spikes, _ga, _gb, _gcount):  # type: ignore[override]
        za, stored_b, sums_a, sums_b = ctx.saved_tensors
        (norm_a, norm_b), (count_a, count_b) = ctx.norms, ctx.counts
        zb = None
        if ctx.b is not None:
            shape_b, dtype_b, spike_b = ctx.b
            zb = unpack_spikes(stored_b, shape_b, dtype_b) if spike_b else stored_b
        with torch.enable_grad():
            s_a = sums_a.detach().requires_grad_(True)
            maps = list(norm_a._map(*norm_a._batch_stats(*moments(s_a, count_a), count_a)[:2]))
            wanted = [s_a]
            if norm_b is not None and zb is not None:
                s_b = sums_b.detach().requires_grad_(True)
                maps += norm_b._map(*norm_b._batch_stats(*moments(s_b, count_b), count_b)[:2])
                wanted.append(s_b)
        shape = norm_a._shape(za, maps[0])
        flat = [m.detach().reshape(shape).to(za.dtype) for m in maps]  # scale_a, shift_a[, scale_b, shift_b]
        second = (zb, flat[2], flat[3]) if len(flat) == 4 else (zb, None, None)
        g = affine_lif_backward(grad_spikes, za, flat[0], flat[1], *second, ctx.lif).contiguous()  # dL/dy
        branches = [(za, flat[0])] + ([(zb, flat[2])] if len(flat) == 4 else [])
        sums_grads = []
        for z, _ in branches:  # dL/dscale, dL/dshift per step and channel
            sums_grads += _affine_grads(g, z)
        g_b = None
        if zb is not None:  # dL/dzb before g becomes dL/dza in place
            g_b = g * flat[2] if len(flat) == 4 else g.clone()
        g.mul_(flat[0])
        wanted += [p for p in ctx.params if p.requires_grad]
        grads = torch.autograd.grad(maps, wanted, [gs.to(m.dtype) for gs, m in zip(sums_grads, maps)],
                                    allow_unused=True)
        _add_sums_grad(g, za, grads[0], norm_a)
        if len(flat) == 4:
            _add_sums_grad(g_b, zb, grads[1], norm_b)
        param_grads = iter(grads[len(wanted) - sum(p.requires_grad for p in ctx.params):])
        return (g, g_b, None, None, None, None, *(next(param_grads) if p.requires_grad else None for p in ctx.params))


def _affine_grads(g: Tensor, z: Tensor) -> list[Tensor]:
    """``[dL/dscale, dL/dshift]`` per step and channel of ``y = scale * z + shift`` from ``g = dL/dy``."""
    T, N, C = z.shape[:3]
    acc = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    g4, z4 = g.view(T, N, C, -1), z.reshape(T, N, C, -1)
    g_scale = torch.stack([(g4[t] * z4[t]).sum(2, dtype=acc).sum(0) for t in range(T)])  # one step at a time
    return [g_scale, g4.sum(3, dtype=acc).sum(1)]


def _add_sums_grad(g: Tensor, z: Tensor, g_sums: Tensor, norm: "_TimeNorm") -> None:
    """``g += d(sums)/dz`` for ``sums = (sum z, sum z^2)`` per step and channel: ``g_sum + 2 z g_sumsq`` (in place;
    ``g_sums`` all-reduced first when the statistics are synchronized)."""
    if norm.synchronized():
        g_sums = g_sums.contiguous()
        dist.all_reduce(g_sums, group=norm.process_group or dist.group.WORLD)
    T, N, C = z.shape[:3]
    g.view(T, N, C, -1).add_(g_sums[0][:, None, :, None].to(g.dtype)).addcmul_(
        z.reshape(T, N, C, -1), (2 * g_sums[1])[:, None, :, None].to(g.dtype))
