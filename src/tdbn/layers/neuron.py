"""LIF neuron module: a thin wrapper around :func:`tdbn.functional.lif`."""

from __future__ import annotations

import torch
from torch import nn

from ..functional import lif as F_lif
from ..functional import surrogate as _surrogate
from ..functional.lif import check_lif_args


class LIF(nn.Module):
    """Iterative LIF neurons over ``[T, N, ...]`` (Eq. 1-3), exact BPTT with a surrogate (Eq. 14-18).

    The neuron state lives inside ``forward``: each call starts from ``u = 0``, so nothing leaks between
    batches and there is no state to reset.

    Example:
        >>> lif = LIF(tau=0.25, v_th=0.5)
        >>> lif(torch.randn(4, 2, 8)).shape   # [T, N, F]
        torch.Size([4, 2, 8])
    """

    def __init__(self, *, tau: float = 0.25, v_th: float = 0.5, width: float = 1.0, surrogate: str = "rectangle"):
        super().__init__()
        check_lif_args(tau, v_th, width)
        _surrogate.get(surrogate)
        self.tau = float(tau)
        self.v_th = float(v_th)
        self.width = float(width)
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F_lif(x, tau=self.tau, v_th=self.v_th, width=self.width, surrogate=self.surrogate)

    def forward_with_membrane(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and membrane potentials ``u`` (before reset), both ``[T, N, ...]``; for analysis."""
        return F_lif(
            x, tau=self.tau, v_th=self.v_th, width=self.width, surrogate=self.surrogate, return_membrane=True
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_th={self.v_th}, width={self.width}, surrogate={self.surrogate!r}"
