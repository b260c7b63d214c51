"""LIF neuron module: a thin wrapper around :func:`tdbn.functional.lif`."""

from __future__ import annotations

import torch
from torch import nn

from ..functional import lif as F_lif
from ..functional.lif import check_backend, resolve_params
from ..functional.params import LIFParameters


class LIF(nn.Module):
    """Iterative LIF neurons over ``[T, N, ...]`` (Eq. 1-3), exact BPTT with a surrogate (Eq. 14-18).

    The neuron state lives inside ``forward``: each call starts from ``u = 0``, so nothing leaks between
    batches and there is no state to reset. The hyper-parameters are one :class:`LIFParameters` (``params``);
    the keywords override single fields. ``backend`` picks the kernels (:func:`tdbn.functional.lif`):
    ``"torch"`` (default, any device) or ``"triton"``; :func:`set_lif_backend` switches a whole model.

    Example:
        >>> lif = LIF(tau=0.25, v_th=0.5)
        >>> lif(torch.randn(4, 2, 8)).shape   # [T, N, F]
        torch.Size([4, 2, 8])
        >>> lif.params
        LIFParameters(tau=0.25, v_th=0.5, surrogate='rectangle', surrogate_width=1.0)
    """

    def __init__(
        self, params: LIFParameters | None = None, *, tau: float | None = None, v_th: float | None = None,
        surrogate_width: float | None = None, surrogate: str | None = None, backend: str = "torch",
    ):
        super().__init__()
        self.params = resolve_params(params, tau=tau, v_th=v_th, surrogate_width=surrogate_width,
                                     surrogate=surrogate)
        check_backend(backend)
        self.backend = backend

    # read-only views of the parameters, for analysis and export code
    tau = property(lambda self: self.params.tau)
    v_th = property(lambda self: self.params.v_th)
    surrogate_width = property(lambda self: self.params.surrogate_width)
    surrogate = property(lambda self: self.params.surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F_lif(x, self.params, backend=self.backend)

    def forward_with_membrane(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and membrane potentials ``u`` (before reset), both ``[T, N, ...]``; for analysis."""
        return F_lif(x, self.params, return_membrane=True, backend=self.backend)

    def extra_repr(self) -> str:
        p = self.params
        extra = "" if self.backend == "torch" else f", backend={self.backend!r}"
        return f"tau={p.tau}, v_th={p.v_th}, surrogate={p.surrogate!r}, surrogate_width={p.surrogate_width}{extra}"


def set_lif_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every :class:`LIF` in ``model`` to ``backend`` (``"torch"`` or ``"triton"``), in place; returns it.

    Only the kernels change, not the mathematics: both backends compute Eq. 1-3 and 14-18 (see
    :mod:`tdbn.operators.cuda_lif` for the 16-bit rounding). Raises ``ValueError`` for an unknown backend or
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
