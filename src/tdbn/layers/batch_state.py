"""What every normalization with batch statistics holds: the process group :func:`tdbn.convert_sync_tdbn` sets, and
(for the per-channel ones) the affine parameters, running statistics and batch count ``torch.nn.BatchNorm`` has."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class Synchronizable:
    """``sync`` and ``process_group`` (set by :func:`tdbn.convert_sync_tdbn`) and :meth:`synchronized`; a mixin of
    tdBN, TEBN, BNTT, TAB and the MPBN neuron."""

    process_group: "dist.ProcessGroup | None" = None  # statistics are reduced over this group in training
    sync: bool = False

    def synchronized(self) -> bool:
        """Whether training statistics are reduced over several processes now (synchronized under DDP)."""
        return (self.sync and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)


def add_channel_state(module: nn.Module, num_features: int) -> None:
    """``weight`` (1) and ``bias`` (0) per channel, ``running_mean`` (0), ``running_var`` (1) and
    ``num_batches_tracked`` (0), as ``torch.nn.BatchNorm`` names them (so state dicts read alike)."""
    module.weight = nn.Parameter(torch.ones(num_features))
    module.bias = nn.Parameter(torch.zeros(num_features))
    module.register_buffer("running_mean", torch.zeros(num_features))
    module.register_buffer("running_var", torch.ones(num_features))
    module.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
