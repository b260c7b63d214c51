"""Running stateless layers on time-first tensors."""

from __future__ import annotations

import torch
from torch import nn

from . import stepping

# modules whose input has a fixed number of dimensions (without T): used to catch a missing time axis
_INPUT_DIMS: dict[type, int] = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5, nn.AvgPool2d: 4, nn.MaxPool2d: 4,
                                nn.AdaptiveAvgPool2d: 4}


class TimeDistributed(nn.Module):
    """Apply a stateless layer to ``[T, N, ...]`` by merging T into the batch: ``[T*N, ...]``.

    A conv wrapped this way runs once per forward over all time steps, not T times.

    Example:
        >>> conv = TimeDistributed(nn.Conv2d(2, 4, 3, padding=1))
        >>> conv(torch.randn(5, 3, 2, 8, 8)).shape   # [T, N, C, H, W]
        torch.Size([5, 3, 4, 8, 8])
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self._in_dim = next((d for cls, d in _INPUT_DIMS.items() if isinstance(module, cls)), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._in_dim is not None and x.dim() != self._in_dim + 1:
            layout = "[T, N, C, H, W]" if self._in_dim == 4 else f"[T, N, ...] ({self._in_dim + 1}-d)"
            raise ValueError(
                f"{type(self.module).__name__} in TimeDistributed expects {layout}, got shape {tuple(x.shape)}; "
                f"time-first layers need the time axis (e.g. x.unsqueeze(0) for T=1)"
            )
        if x.dim() < 2:
            raise ValueError(f"TimeDistributed expects [T, N, ...], got shape {tuple(x.shape)}")
        step = stepping.current()
        if step is not None and _is_synapse(self.module):  # one step of a stream: as its T*N samples compute it
            return step.synapse(self.module, x)
        T, N = x.shape[:2]
        y = self.module(x.flatten(0, 1))
        return y.view(T, N, *y.shape[1:])


def _is_synapse(module: nn.Module) -> bool:
    """A conv or fc layer as PyTorch defines it (a subclass with a forward of its own computes something else)."""
    return type(module).forward in (nn.Conv2d.forward, nn.Linear.forward)


class Flatten(nn.Module):
    """``[T, N, ...] -> [T, N, F]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


class MeanOverTime(nn.Module):
    """Decoding readout (Eq. 11): ``[T, N, K] -> [N, K]`` by averaging over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(0)
