"""LIF neuron module: a thin wrapper around :func:`tdbn.functional.lif`."""

from __future__ import annotations

import torch
from torch import nn

from ..functional import lif as F_lif
from ..functional.lif import resolve_params
from ..functional.params import LIFParameters
from . import stepping


class LIF(nn.Module):
    """Iterative LIF neurons over ``[T, N, ...]`` (Eq. 1-3), exact BPTT with a surrogate (Eq. 14-18).

    The neuron state lives inside ``forward``: each call starts from ``u = 0``, so nothing leaks between
    batches and there is no state to reset. A stream (:func:`tdbn.stream.step`) passes the state explicitly: inside
    its step the forward continues from the potential the stream carries. The hyper-parameters are one :class:`LIFParameters` (``params``);
    the keywords override single fields. The kernels are the tensor's device's (:func:`tdbn.functional.lif`).

    Example:
        >>> lif = LIF(tau=0.25, v_th=0.5)
        >>> lif(torch.randn(4, 2, 8)).shape   # [T, N, F]
        torch.Size([4, 2, 8])
        >>> lif.params
        LIFParameters(tau=0.25, v_th=0.5, surrogate='rectangle', surrogate_width=1.0)
    """

    def __init__(
        self, params: LIFParameters | None = None, *, tau: float | None = None, v_th: float | None = None,
        surrogate_width: float | None = None, surrogate: str | None = None,
    ):
        super().__init__()
        self.params = resolve_params(params, tau=tau, v_th=v_th, surrogate_width=surrogate_width,
                                     surrogate=surrogate)

    # read-only views of the parameters, for analysis and export code
    tau = property(lambda self: self.params.tau)
    v_th = property(lambda self: self.params.v_th)
    surrogate_width = property(lambda self: self.params.surrogate_width)
    surrogate = property(lambda self: self.params.surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = stepping.current()
        if step is not None:  # one step of a stream: from the potential it carries (tdbn.stream)
            return step.lif(self, x)
        return F_lif(x, self.params)

    def forward_with_membrane(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spikes and membrane potentials ``u`` (before reset), both ``[T, N, ...]``; for analysis."""
        return F_lif(x, self.params, return_membrane=True)

    def extra_repr(self) -> str:
        p = self.params
        return f"tau={p.tau}, v_th={p.v_th}, surrogate={p.surrogate!r}, surrogate_width={p.surrogate_width}"

