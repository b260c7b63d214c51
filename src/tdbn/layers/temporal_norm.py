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
computes with the whole batch. In training a unit (norm, then LIF) or residual junction with one of them is one
autograd node (:class:`_NormLIF`), which stores what the tdBN unit stores.

Each is described by data, a :class:`NormSpec` (which steps a statistic spans, which affine, which step weight):
the table above is :data:`NORM_SPECS`, and the classes differ only in the spec they carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..operators.registration import LIFArgs
from ..operators.spike_ops import pack_spikes, unpack_spikes
from ..operators.step_stats import step_grad_sums
from ..operators.step_stats import step_sums as step_sums_op
from ..operators.unit_ops import affine_lif_backward, lif_forward
from . import stepping
from .batch_state import Synchronizable
from .recompute import recomputing

Tensor = torch.Tensor


@dataclass(frozen=True)
class NormSpec:
    """A batch normalization of spiking layers, as data: which values each statistic spans, which affine follows,
    and whether the normalized value is scaled by the threshold.

    Attributes:
        name: the name models take (``model.norm``).
        statistics: what the statistics of step ``t`` span, per channel, besides batch and space: ``"all"`` every
            step (tdBN, BN, TEBN), ``"step"`` step ``t`` alone (BNTT), ``"causal"`` the steps ``0..t`` (TAB).
            Running statistics are per channel for ``"all"``, per step and channel otherwise.
        affine: ``"channel"`` (``gamma``, ``beta`` of shape ``[C]``) or ``"step"`` (``[T, C]``, one per step).
        step_weight: a learned weight per step multiplying the affine output: ``"none"``, ``"p"`` (``p_t``, TEBN) or
            ``"p2"`` (``p_t^2``, TAB); ``p`` starts at 1.
        threshold: tdBN's ``alpha * v_th`` factor on the normalized value (Eq. 7).

    A normalization that these fields describe is one entry of :data:`NORM_SPECS` and one line of a class: every
    such class shares :class:`_TimeNorm`'s statistics, affine, running statistics, synchronization, lean unit
    (:class:`_NormLIF`), streaming step and folding. tdBN and BN (``statistics="all"``, ``affine="channel"``, no
    step weight) keep their own modules (:class:`tdbn.layers.TdBatchNorm2d`) with the one-pass kernels of the op
    layer.
    """

    name: str
    statistics: str = "all"
    affine: str = "channel"
    step_weight: str = "none"
    threshold: bool = False

    def __post_init__(self) -> None:
        for field_, value, valid in (("statistics", self.statistics, STATISTICS), ("affine", self.affine, AFFINES),
                                     ("step_weight", self.step_weight, STEP_WEIGHTS)):
            if value not in valid:
                raise ValueError(f"NormSpec {self.name!r}: {field_} must be one of {list(valid)}, got {value!r}")

    @property
    def per_step(self) -> bool:
        """Whether the evaluation-mode map may differ between steps (what fusion and streaming ask)."""
        return self.statistics != "all" or self.affine != "channel" or self.step_weight != "none"


STATISTICS = ("all", "step", "causal")
AFFINES = ("channel", "step")
STEP_WEIGHTS = ("none", "p", "p2")

#: every normalization the models take by name (``model.norm``), as data; ``mpbn`` adds a normalization of the
#: membrane potential to BN (:class:`tdbn.layers.MPBNLIF`) and ``none`` has none
NORM_SPECS: dict[str, NormSpec] = {spec.name: spec for spec in (
    NormSpec("tdbn", threshold=True),  # Eq. 5-8
    NormSpec("bn"),
    NormSpec("tebn", step_weight="p"),  # Duan et al. 2022
    NormSpec("bntt", statistics="step", affine="step"),  # Kim & Panda 2021
    NormSpec("tab", statistics="causal", affine="step", step_weight="p2"),  # Jiang et al. 2024
)}


def step_sums(x: Tensor, group: dist.ProcessGroup | None = None, *, synchronized: bool = False,
              lean: bool = False) -> tuple[Tensor, int]:
    """Per step and channel of ``x [T, N, C, ...]``: the sums and sums of squares over batch and space, ``[2, T, C]``
    in float32 (float64 input: float64), and the number of values each spans; ``synchronized``: over the batches of
    all processes of ``group`` (default: the world), by a differentiable all-reduce.

    ``lean`` (a lean unit's forward, no autograd): the operator ``tdbn::step_sums``, one pass of the device's
    statistics kernel per step (float64 accumulation, no temporary of ``x``'s size). Otherwise differentiable ATen
    operations (over the contiguous last axis first; accumulated in float32 for 16-bit input, with no float32 copy
    of ``x``); the modules and a recomputed unit take this path in both of their runs."""
    T, N, C = x.shape[:3]
    count = x.numel() // max(T * C, 1)
    acc = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if lean:
        sums = step_sums_op(x).to(acc)
    else:
        v = x.reshape(T, N, C, -1)
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
    """A normalization with per-step statistics or parameters, made from its :class:`NormSpec` (the class attribute
    ``spec``): its parameters (``weight``, ``bias``, and ``p`` with a step weight), running statistics, statistics
    (local or synchronized), affine map and running updates."""

    spec: NormSpec

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
        spec = self.spec
        affine = (timesteps, num_features) if spec.affine == "step" else (num_features,)
        self.weight = nn.Parameter(torch.ones(affine))
        self.bias = nn.Parameter(torch.zeros(affine))
        if spec.step_weight != "none":
            self.p = nn.Parameter(torch.ones(timesteps))
        stats = (num_features,) if spec.statistics == "all" else (timesteps, num_features)
        self.register_buffer("running_mean", torch.zeros(stats))
        self.register_buffer("running_var", torch.ones(stats))

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

    def _sums(self, x: Tensor, *, lean: bool = False) -> tuple[Tensor, int]:
        return step_sums(x, self.process_group, synchronized=self.synchronized(), lean=lean)

    def _batch_stats(self, step_mean: Tensor, step_var: Tensor, count: int) -> tuple[Tensor, Tensor, int | Tensor]:
        """The statistics this normalization applies, from every step's moments (``[T, C]``, ``count`` values
        each): ``(mean, var, n)``, ``n`` the values each spans (for the running variance). Steps hold equal counts,
        so pooled moments combine exactly: the mean of the means, and the mean of the variances plus the variance of
        the means."""
        window = self.spec.statistics
        if window == "step":
            return step_mean, step_var, count
        if window == "all":
            mean = step_mean.mean(0)
            var = step_var.mean(0) + (step_mean - mean).square().mean(0)
            return mean, var, count * step_mean.shape[0]
        means, variances = [], []  # "causal": step t pools the steps 0..t
        for t in range(step_mean.shape[0]):
            m = step_mean[: t + 1].mean(0)
            means.append(m)
            variances.append(step_var[: t + 1].mean(0) + (step_mean[: t + 1] - m).square().mean(0))
        mean, var = torch.stack(means), torch.stack(variances)
        n = torch.arange(1, step_mean.shape[0] + 1, dtype=var.dtype, device=var.device)[:, None] * count
        return mean, var, n

    def forward(self, x: Tensor) -> Tensor:
        step = stepping.current()
        if step is not None and not self.training:  # one step of a stream: step t's map
            return step.time_norm(self, x)
        self._check(x)
        if self.training:
            sums, count = self._sums(x)
            mean, var, n = self._batch_stats(*moments(sums, count), count)
            if self._count_batch():
                self._update(self.running_mean, self.running_var, mean, var, n)
        else:
            mean, var = self.running_mean, self.running_var
        return self._affine(x, *self._map(mean, var))

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
        """``(scale, shift)`` of ``y = w_t * (gamma * x_hat + beta) = scale * x + shift`` from the statistics
        (``[T, C]`` or ``[C]`` each), ``w_t`` the step weight (``p_t``, ``p_t^2``) where there is one."""
        scale = self.weight * torch.rsqrt(var + self.eps)
        if self.spec.step_weight == "none":
            return scale, self.bias - mean * scale
        w = (self.p if self.spec.step_weight == "p" else self.p.square())[:, None]
        return w * scale, w * (self.bias - mean * scale)

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

    spec = NORM_SPECS["tebn"]


class BNTT(_TimeNorm):
    """Batch normalization through time: every step its own statistics (batch and space per channel) and its own
    affine, ``y_t = gamma_t * x_hat_t + beta_t``; running statistics per step.

    Example:
        >>> bn = BNTT(4, timesteps=3)
        >>> bn.weight.shape, bn.running_mean.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
    """

    spec = NORM_SPECS["bntt"]


class TAB(_TimeNorm):
    """Temporal accumulated batch normalization: the statistics of step ``t`` span the steps ``0..t`` (causal; batch
    and space per channel), each step has its own affine and running statistics, and a learned step weight ``p_t``
    enters squared, ``y_t = p_t^2 * (gamma_t * x_hat_t + beta_t)`` (``p`` starts at 1).

    Example:
        >>> TAB(4, timesteps=3, dims=1)(torch.randn(3, 8, 4)).shape
        torch.Size([3, 8, 4])
    """

    spec = NORM_SPECS["tab"]


TIME_NORMS = (TEBN, BNTT, TAB)
#: the module of each normalization with per-step statistics or parameters, by name
TIME_NORM_CLASSES: dict[str, type[_TimeNorm]] = {cls.spec.name: cls for cls in TIME_NORMS}


class ChannelNorm:
    """A tdBN or BN module (statistics per channel over every step, a per-channel affine, the ``alpha * v_th``
    factor) seen as :class:`_TimeNorm` is seen by the lean unit (:class:`_NormLIF`): the normalization of an MPBN
    unit (BN, then the MPBN neuron), which thereby trains as one autograd node too."""

    spec = NORM_SPECS["bn"]

    def __init__(self, bn: nn.Module) -> None:
        self.bn = bn

    def __getattr__(self, name: str):  # weight, bias, running statistics, eps, momentum, process_group, ...
        return getattr(self.__dict__["bn"], name)

    _batch_stats = _TimeNorm._batch_stats
    _count_batch = _TimeNorm._count_batch
    _update = _TimeNorm._update
    _sums = _TimeNorm._sums
    _shape = staticmethod(_TimeNorm._shape)

    def _map(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.bn.weight * ((self.bn.alpha * self.bn.v_th) * torch.rsqrt(var + self.bn.eps))
        return scale, self.bn.bias - mean * scale


def norm_lif(za: Tensor, zb: Tensor | None, norm_a, norm_b, lif: nn.Module, *, spikes_b: bool = False) -> Tensor:
    """``lif(norm_a(za) + norm_b(zb))`` (``+ zb`` without ``norm_b``; a unit without ``zb``) in training as one
    autograd node (:class:`_NormLIF`), and the running statistics of the batch updated once. ``norm_a``, ``norm_b``:
    TEBN, BNTT, TAB, or a :class:`ChannelNorm`; ``lif``: a plain LIF, or a neuron with its own lean steps (the MPBN
    neuron: ``lean_steps``, ``lean_grad_``, ``count_lean_batch``)."""
    norm_a._check(za)
    if norm_b is not None:
        norm_b._check(zb)
    norm_params = [*norm_a.parameters(), *(norm_b.parameters() if norm_b is not None else ())]
    neuron = lif if hasattr(lif, "lean_steps") else None
    neuron_params = list(lif.parameters()) if neuron is not None else []
    spikes, sums_a, sums_b, counts, mp_mean, mp_var = _NormLIF.apply(
        za, zb, norm_a, norm_b, LIFArgs.of(lif.params), bool(spikes_b), neuron, len(norm_params), *norm_params,
        *neuron_params)
    for norm, sums, count in ((norm_a, sums_a, int(counts[0])), (norm_b, sums_b, int(counts[1]))):
        if norm is not None and (zb is not None or norm is norm_a):
            if norm._count_batch():
                mean, var, n = norm._batch_stats(*moments(sums, count), count)
                norm._update(norm.running_mean, norm.running_var, mean, var, n)
    if neuron is not None:
        neuron.count_lean_batch(mp_mean, mp_var, int(counts[2]))
    return spikes


def _junction_input(za: Tensor, maps_a: tuple[Tensor, Tensor], zb: Tensor | None,
                    maps_b: tuple[Tensor, Tensor] | None) -> Tensor:
    """``y = scale_a * za + shift_a`` plus ``scale_b * zb + shift_b`` (or ``zb``), in ``za``'s dtype; the maps are
    already shaped to broadcast and of that dtype. The same operations in forward and in a recomputation."""
    y = torch.addcmul(maps_a[1], za, maps_a[0])
    if zb is not None:
        if maps_b is not None:
            y.addcmul_(zb, maps_b[0]).add_(maps_b[1])
        else:
            y.add_(zb)
    return y


class _NormLIF(torch.autograd.Function):
    """``LIF(norm_a(za) [+ norm_b(zb) | + zb])`` for TEBN, BNTT, TAB or BN (:class:`ChannelNorm`) in training (a unit,
    or a residual junction): forward stores ``za``, ``zb`` (its bits when it holds spikes) and the per-step sums;
    backward recomputes ``y``, the potentials and ``dL/dy`` in one buffer (for a plain LIF the operator
    ``tdbn::affine_lif_backward``; for an MPBN neuron its own steps, in place), turns it into ``dL/dza`` in place, and
    takes the statistics' and parameters' share through the small ``[T, C]`` graphs of the maps from the sums (their
    gradient all-reduced when synchronized)."""

    @staticmethod
    def _maps(norm, sums: Tensor, count: int) -> tuple[Tensor, Tensor]:
        return norm._map(*norm._batch_stats(*moments(sums, count), count)[:2])

    @staticmethod
    def forward(ctx, za, zb, norm_a, norm_b, lif, spike_b, neuron, n_norm, *params):  # type: ignore[override]
        sums_a, count_a = norm_a._sums(za, lean=True)
        maps = _NormLIF._maps(norm_a, sums_a, count_a)
        shape = norm_a._shape(za, maps[0])
        flat_a = tuple(m.reshape(shape).to(za.dtype) for m in maps)  # in za's dtype: 16-bit stays 16-bit
        sums_b, count_b, flat_b = za.new_empty(0), 0, None
        if zb is not None and norm_b is not None:
            sums_b, count_b = norm_b._sums(zb, lean=True)
            maps = _NormLIF._maps(norm_b, sums_b, count_b)
            flat_b = tuple(m.reshape(norm_b._shape(zb, maps[0])).to(zb.dtype) for m in maps)
        y = _junction_input(za, flat_a, zb, flat_b)
        mp_mean = mp_var = za.new_empty(0)
        mp_count = 0
        if neuron is None:
            spikes, _ = lif_forward(y, None, lif, False)
        else:
            spikes, mp_mean, mp_var, mp_count, ctx.neuron_cfg = neuron.lean_steps(y)
        del y
        stored_b = za.new_empty(0) if zb is None else pack_spikes(zb) if spike_b else zb
        ctx.save_for_backward(za, stored_b, sums_a, sums_b, mp_mean, mp_var)
        ctx.norms, ctx.lif, ctx.counts = (norm_a, norm_b), lif, (count_a, count_b, mp_count)
        ctx.neuron, ctx.norm_params, ctx.neuron_params = neuron, params[:n_norm], params[n_norm:]
        ctx.b = None if zb is None else (zb.shape, zb.dtype, spike_b)
        ctx.mark_non_differentiable(sums_a, sums_b, mp_mean, mp_var)
        return spikes, sums_a, sums_b, torch.tensor([count_a, count_b, mp_count]), mp_mean, mp_var

    @staticmethod
    def backward(ctx, grad_spikes, _ga, _gb, _gcount, _gmean, _gvar):  # type: ignore[override]
        za, stored_b, sums_a, sums_b, mp_mean, mp_var = ctx.saved_tensors
        (norm_a, norm_b), (count_a, count_b, mp_count) = ctx.norms, ctx.counts
        zb = None
        if ctx.b is not None:
            shape_b, dtype_b, spike_b = ctx.b
            zb = unpack_spikes(stored_b, shape_b, dtype_b) if spike_b else stored_b
        with torch.enable_grad():
            s_a = sums_a.detach().requires_grad_(True)
            maps = list(_NormLIF._maps(norm_a, s_a, count_a))
            wanted = [s_a]
            if norm_b is not None and zb is not None:
                s_b = sums_b.detach().requires_grad_(True)
                maps += _NormLIF._maps(norm_b, s_b, count_b)
                wanted.append(s_b)
        shape = norm_a._shape(za, maps[0])
        flat = [m.detach().reshape(shape).to(za.dtype) for m in maps]  # scale_a, shift_a[, scale_b, shift_b]
        neuron_grads: tuple[Tensor | None, ...] = ()
        if ctx.neuron is None:
            second = (zb, flat[2], flat[3]) if len(flat) == 4 else (zb, None, None)
            g = affine_lif_backward(grad_spikes, za, flat[0], flat[1], *second, ctx.lif).contiguous()  # dL/dy
        else:  # y again, then the potentials and dL/dy in its buffer
            y = _junction_input(za, (flat[0], flat[1]), zb, (flat[2], flat[3]) if len(flat) == 4 else None)
            g, gw, gb = ctx.neuron.lean_grad_(y, grad_spikes, mp_mean, mp_var, mp_count, ctx.neuron_cfg)
            neuron_grads = tuple(grad if p.requires_grad else None for grad, p in zip((gw, gb), ctx.neuron_params))
        branches = [(za, flat[0])] + ([(zb, flat[2])] if len(flat) == 4 else [])
        sums_grads = []
        for z, _ in branches:  # dL/dscale, dL/dshift per step and channel
            sums_grads += _affine_grads(g, z)
        g_b = None
        if zb is not None:  # dL/dzb before g becomes dL/dza in place
            g_b = g * flat[2] if len(flat) == 4 else g.clone()
        g.mul_(flat[0])
        params = ctx.norm_params
        wanted += [p for p in params if p.requires_grad]
        # per step and channel; summed over the steps for a map that is the same at every step ([C])
        sums_grads = [gs if gs.shape == m.shape else gs.sum(0) for gs, m in zip(sums_grads, maps)]
        grads = torch.autograd.grad(maps, wanted, [gs.to(m.dtype) for gs, m in zip(sums_grads, maps)],
                                    allow_unused=True)
        _add_sums_grad(g, za, grads[0], norm_a)
        if len(flat) == 4:
            _add_sums_grad(g_b, zb, grads[1], norm_b)
        param_grads = iter(grads[len(wanted) - sum(p.requires_grad for p in params):])
        return (g, g_b, None, None, None, None, None, None,
                *(next(param_grads) if p.requires_grad else None for p in params), *neuron_grads)


def _affine_grads(g: Tensor, z: Tensor) -> list[Tensor]:
    """``[dL/dscale, dL/dshift]`` per step and channel of ``y = scale * z + shift`` from ``g = dL/dy``: the operator
    ``tdbn::step_grad_sums`` (one pass of the device's kernel per step where it indexes the operands), in float64."""
    g_scale, g_shift = step_grad_sums(g, z).unbind(0)
    return [g_scale, g_shift]


def _add_sums_grad(g: Tensor, z: Tensor, g_sums: Tensor, norm) -> None:
    """``g += d(sums)/dz`` for ``sums = (sum z, sum z^2)`` per step and channel: ``g_sum + 2 z g_sumsq`` (in place;
    ``g_sums`` all-reduced first when the statistics are synchronized)."""
    if norm.synchronized():
        g_sums = g_sums.contiguous()
        dist.all_reduce(g_sums, group=norm.process_group or dist.group.WORLD)
    T, N, C = z.shape[:3]
    g.view(T, N, C, -1).add_(g_sums[0][:, None, :, None].to(g.dtype)).addcmul_(
        z.reshape(T, N, C, -1), (2 * g_sums[1])[:, None, :, None].to(g.dtype))
