"""LIF neuron module: a thin wrapper around :func:`tdbn.functional.lif`."""

from __future__ import annotations

import torch
from torch import nn

from ..functional import lif as F_lif
from ..functional import surrogate as _surrogate
from ..functional.lif import check_backend, check_lif_args


class LIF(nn.Module):
    """Iterative LIF neurons over ``[T, N, ...]`` (Eq. 1-3), exact BPTT with a surrogate (Eq. 14-18).

    The neuron state lives inside ``forward``: each call starts from ``u = 0``, so nothing leaks between
    batches and there is no state to reset. ``backend`` picks the kernels (:func:`tdbn.functional.lif`):
    ``"torch"`` (default, any device) or ``"triton"`` (CUDA); :func:`set_lif_backend` switches a whole model.

    Example:
        >>> lif = LIF(tau=0.25, v_th=0.5)
        >>> lif(torch.randn(4, 2, 8)).shape   # [T, N, F]
        torch.Size([4, 2, 8])
    """

    def __init__(
        self, *, tau: float = 0.25, v_th: float = 0.5, width: float = 1.0, surrogate: str = "rectangle",
        backend: str = "torch",
    ):
        super().__init__()
        check_lif_args(tau, v_th, width)
        _surrogate.get(surrogate)
        check_backend(backend)
        self.backend = backend
        self.tau = float(tau)
        self.v_th = float(v_th)
        self.width = float(width)
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F_lif(x, tau=self.tau, v_th=self.v_th, width=self.width, surrogate=self.surrogate, backend=self.backend)

    def forward_with_membrane(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and membrane potentials ``u`` (before reset), both ``[T, N, ...]``; for analysis."""
        return F_lif(
            x, tau=self.tau, v_th=self.v_th, width=self.width, surrogate=self.surrogate, return_membrane=True,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        extra = "" if self.backend == "torch" else f", backend={self.backend!r}"
        return f"tau={self.tau}, v_th={self.v_th}, width={self.width}, surrogate={self.surrogate!r}{extra}"


def set_lif_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every :class:`LIF` in ``model`` to ``backend`` (``"torch"`` or ``"triton"``), in place; returns it.

    Only the kernels change, not the mathematics: both backends compute Eq. 1-3 and 14-18 (see
    :mod:`tdbn.functional.lif_triton` for the 16-bit rounding). Raises ``ValueError`` for an unknown backend or
    when ``triton`` is not installed.

    Example:
        >>> net = nn.Sequential(LIF(), LIF())
        >>> [m.backend for m in set_lif_backend(net, "torch")]
        ['torch', 'torch']
    """
    check_backend(backend)
    for module in model.modules():
        if isinstance(module, LIF):
            module.backend = backend
    return model
