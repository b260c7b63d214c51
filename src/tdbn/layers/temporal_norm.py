"""The normalizations that followed tdBN and look at time: TEBN, BNTT and TAB (docs/method.md, "Successors").

Each takes a time-first tensor, ``[T, N, C, H, W]`` (``dims=2``, the default) or ``[T, N, C]`` (``dims=1``), with
exactly the ``timesteps`` steps it was built for, and differs from tdBN in which values one statistic spans and which parameters depend on the step:

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

from .recompute import recomputing

Tensor = torch.Tensor


def step_moments(x: Tensor, group: dist.ProcessGroup | None = None, *,
                 synchronized: bool = False) -> tuple[Tensor, Tensor, int]:
    """Per step and channel of ``x [T, N, C, ...]``: the mean and the biased variance over batch and space
    (``[T, C]`` each), and the number of values each spans; ``synchronized``: over the batches of all processes of
    ``group`` (default: the world), by a differentiable all-reduce of the sums and sums of squares. The variance is
    ``E[x^2] - E[x]^2`` from one pass (as the tdBN kernels compute it), clamped at 0."""
    T, N, C = x.shape[:3]
    v = x.reshape(T, N, C, -1)
    count = N * v.shape[-1]
    # one pass of sums and sums of squares (over the contiguous last axis first: fast on the CPU), accumulated in
    # float32 for 16-bit input (no float32 copy of x); over all processes if synchronized
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    sums = torch.stack([v.sum(3, dtype=acc).sum(1), v.square().sum(3, dtype=acc).sum(1)])  # [2, T, C]
    if synchronized:
        from torch.distributed.nn.functional import all_reduce  # differentiable

        sums = all_reduce(sums, group=group or dist.group.WORLD)
        count *= dist.get_world_size(group)
    mean = sums[0] / count
    return mean, (sums[1] / count - mean * mean).clamp_min(0), count


@torch.no_grad()
def update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int | Tensor,
                   momentum: float) -> None:
    """``torch.nn.BatchNorm``'s momentum update of running statistics from a batch's ``mean`` and biased ``var``;
    ``count``: the values each statistic spans (for the unbiased variance), a number or a tensor broadcast against
    ``var``."""
    unbiased = var * (count / (count - 1)) if isinstance(count, Tensor) else var * (count / max(count - 1, 1))
    running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
    running_var.mul_(1 - momentum).add_(unbiased.detach().to(running_var.dtype), alpha=momentum)


class _TimeNorm(nn.Module):
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
        self.process_group: dist.ProcessGroup | None = None  # set by tdbn.convert_sync_tdbn
        self.sync = False

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

    def synchronized(self) -> bool:
        """Whether training statistics are reduced over several processes now."""
        return (self.sync and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def _step_moments(self, x: Tensor) -> tuple[Tensor, Tensor, int]:
        return step_moments(x, self.process_group if self.synchronized() else None, synchronized=self.synchronized())

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
    def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """``scale * x + shift`` with ``scale``, ``shift`` of shape ``[T, C]`` or ``[C]`` (per step and channel), in
        ``x``'s dtype: one multiply-add, which keeps nothing of ``x``'s size for backward but ``x`` itself."""
        T, C = x.shape[0], x.shape[2]
        shape = (T if scale.dim() == 2 else 1, 1, C) + (1,) * (x.dim() - 3)
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
        s = f"{self.num_features}, timesteps={self.timesteps}, dims={self.dims}, eps={self.eps}, momentum={self.momentum}"
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

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if self.training:
            step_mean, step_var, count = self._step_moments(x)
            mean = step_mean.mean(0)  # equal counts per step: the mean and variance over all steps
            var = step_var.mean(0) + (step_mean - mean).square().mean(0)
            if self._count_batch():
                self._update(self.running_mean, self.running_var, mean, var, count * x.shape[0])
        else:
            mean, var = self.running_mean, self.running_var
        return self._affine(x, *self._map(mean, var))

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

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if self.training:
            mean, var, count = self._step_moments(x)
            if self._count_batch():
                self._update(self.running_mean, self.running_var, mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        return self._affine(x, *self._map(mean, var))

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

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if self.training:
            step_mean, step_var, count = self._step_moments(x)
            means, vars_ = [], []
            for t in range(x.shape[0]):  # steps 0..t hold equal counts: combine their moments exactly
                m = step_mean[: t + 1].mean(0)
                means.append(m)
                vars_.append(step_var[: t + 1].mean(0) + (step_mean[: t + 1] - m).square().mean(0))
            mean, var = torch.stack(means), torch.stack(vars_)
            if self._count_batch():  # step t's statistics span (t + 1) * count values
                counts = torch.arange(1, x.shape[0] + 1, dtype=var.dtype, device=var.device)[:, None] * count
                self._update(self.running_mean, self.running_var, mean, var, counts)
        else:
            mean, var = self.running_mean, self.running_var
        return self._affine(x, *self._map(mean, var))

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.weight * torch.rsqrt(var + self.eps)
        p2 = self.p.square()[:, None]
        return p2 * scale, p2 * (self.bias - mean * scale)


TIME_NORMS = (TEBN, BNTT, TAB)
