"""Threshold-dependent batch normalization modules, tdBN (paper Eq. 5-8)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..functional.params import DEFAULT_LIF
from ..functional.tdbn import td_batch_norm
from ..operators.batch_norm import NormArgs
from .batch_state import Synchronizable, add_channel_state
from .recompute import recomputing


class _TdBatchNorm(Synchronizable, nn.Module):
    _layout = ""
    _ndim = 0

    def __init__(
        self,
        num_features: int,
        *,
        alpha: float = 1.0,
        v_th: float = DEFAULT_LIF.v_th,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if not v_th > 0:
            raise ValueError(f"v_th must be > 0, got {v_th}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.num_features = int(num_features)
        self.alpha = float(alpha)
        self.v_th = float(v_th)
        self.eps = float(eps)
        self.momentum = float(momentum)
        add_channel_state(self, num_features)  # weight, bias: lambda (init 1) and beta (init 0) of Eq. 8

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != self._ndim:
            raise ValueError(
                f"{type(self).__name__} expects a time-first tensor {self._layout} ({self._ndim}-d), got shape "
                f"{tuple(x.shape)}; add the time axis first (e.g. x.unsqueeze(0) for T=1)"
            )
        if x.shape[2] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects {self.num_features} channels at dim 2 of "
                f"{self._layout}, got shape {tuple(x.shape)}"
            )

    def group_name(self) -> str:
        """The name of the process group whose batches the training statistics span, ``""`` for this process's
        batch alone (not synchronized, or a group of one process)."""
        if not self.synchronized():
            return ""
        return (self.process_group or dist.group.WORLD).group_name

    def unit_args(self, x: torch.Tensor) -> NormArgs:
        """This tdBN's share of a training-mode unit (:mod:`tdbn.operators.unit_ops`) reading ``x``: checks ``x``,
        counts the batch (like :meth:`forward`) and returns the parameters, running statistics and constants."""
        self._check(x)
        self.num_batches_tracked.add_(1)
        return NormArgs(self.weight, self.bias, self.running_mean, self.running_var, self.alpha * self.v_th,
                        self.momentum, self.eps, self.group_name())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        running_mean, running_var = self.running_mean, self.running_var
        if self.training and recomputing():  # a unit's second run for backward: the batch is counted already
            running_mean, running_var = running_mean.clone(), running_var.clone()
        elif self.training:
            self.num_batches_tracked.add_(1)
        return td_batch_norm(
            x, running_mean, running_var, self.weight, self.bias,
            alpha=self.alpha, v_th=self.v_th, training=self.training, momentum=self.momentum, eps=self.eps,
            group=self.group_name() if self.training else "",
        )

    def extra_repr(self) -> str:
        s = f"{self.num_features}, alpha={self.alpha:.4g}, v_th={self.v_th}, eps={self.eps}, momentum={self.momentum}"
        return s + (", sync=True" if self.sync else "")


class TdBatchNorm1d(_TdBatchNorm):
    """tdBN for fully-connected layers, input ``[T, N, F]``; statistics per feature over T and N.

    Example:
        >>> bn = TdBatchNorm1d(16, alpha=1.0, v_th=0.5)
        >>> y = bn(torch.randn(4, 32, 16))
        >>> round(y.var(dim=(0, 1), unbiased=False).mean().item(), 3)  # (alpha * v_th)^2
        0.25
    """

    _layout = "[T, N, F]"
    _ndim = 3


class TdBatchNorm2d(_TdBatchNorm):
    """tdBN for conv layers, input ``[T, N, C, H, W]``; statistics per channel over T, N, H and W."""

    _layout = "[T, N, C, H, W]"
    _ndim = 5


TD_NORMS = (TdBatchNorm1d, TdBatchNorm2d)


def convert_sync_tdbn(module: nn.Module, process_group: "dist.ProcessGroup | None" = None) -> nn.Module:
    """Synchronize every tdBN's training statistics across the processes of ``process_group`` (sync-BN).

    The counterpart of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps ``alpha`` and ``v_th``
    and runs on every backend (gloo on CPU included). The successors with batch statistics (TEBN, BNTT, TAB and the
    MPBN neuron) are synchronized too. Modifies ``module`` in place and returns it. Plain ``nn.BatchNorm*`` layers,
    if any, are converted with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``.
    """
    from .mpbn import MPBNLIF
    from .temporal_norm import _TimeNorm

    for m in module.modules():
        if isinstance(m, (_TdBatchNorm, _TimeNorm, MPBNLIF)):
            m.sync = True
            m.process_group = process_group
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return module
