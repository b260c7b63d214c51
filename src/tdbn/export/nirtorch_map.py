"""A node map for nirtorch's generic interpreter (``nirtorch.nir_to_torch``) that runs tdbn's graphs as NIR states them.

nirtorch 2.6 maps ``Conv2d``, ``Flatten``, ``Linear`` and ``Input`` / ``Output`` itself, but:

- its default ``Affine`` map writes the bias to ``module.weight.bias`` (an attribute nothing reads), so every
  ``Affine`` runs without its bias;
- it has no map for ``LIF`` (each simulator brings its own).

:func:`nirtorch_node_map` supplies both: ``Affine`` as ``nn.Linear`` with its bias, and ``LIF`` as
:class:`NIRLIFStep`, one forward-Euler step of NIR's equation written literally (``tdbn.export.neuron_map``). The
module nirtorch builds computes one time step for one sample (NIR shapes have no batch axis) and returns
``(output, state)``; pass the state back at the next step.

Example:
    >>> import torch, nirtorch, tdbn
    >>> from tdbn.export import to_nir
    >>> net = tdbn.models.create("plain", num_classes=3, depth=5, width=1 / 16, timesteps=2).eval()
    >>> graph = to_nir(net, input_shape=(3, 8, 8))
    >>> module = nirtorch.nir_to_torch(graph, nirtorch_node_map(dt=graph.metadata["dt"]))
    >>> x, state, outputs = torch.rand(3, 8, 8), None, []
    >>> for t in range(2):
    ...     out, state = module(x, state) if state is not None else module(x)
    ...     outputs.append(out)
    >>> torch.allclose(torch.stack(outputs).mean(0), tdbn.fuse(net)(x.unsqueeze(0))[0], atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn


class NIRLIFStep(nn.Module):
    """NIR's LIF, one forward-Euler step of length ``dt``: ``v += dt/tau * (v_leak - v + r*x)``, spike ``v > v_th``,
    then ``v = v_reset``. Per-neuron parameters, as NIR stores them; ``forward(x, state) -> (spikes, v)``."""

    def __init__(self, node: Any, *, dt: float):
        super().__init__()
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("gain", as_t(dt / np.asarray(node.tau, dtype=np.float64)))
        self.register_buffer("r", as_t(node.r))
        self.register_buffer("v_leak", as_t(node.v_leak))
        self.register_buffer("v_threshold", as_t(node.v_threshold))
        self.register_buffer("v_reset", as_t(node.v_reset if node.v_reset is not None else np.zeros_like(node.tau)))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = v + self.gain * (self.v_leak - v + self.r * x)
        z = v > self.v_threshold
        return z.to(x.dtype), torch.where(z, self.v_reset, v)


def _affine(node: Any) -> nn.Linear:
    fc = nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=True)
    with torch.no_grad():
        fc.weight.copy_(torch.as_tensor(np.asarray(node.weight, dtype=np.float32)))
        fc.bias.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)))
    return fc


def nirtorch_node_map(*, dt: float) -> dict[type, Callable[[Any], nn.Module]]:
    """``{nir.Affine: ..., nir.LIF: ...}`` for ``nirtorch.nir_to_torch(graph, node_map)`` (module docstring).

    ``dt`` is the step the graph was written for (``graph.metadata["dt"]`` for tdbn's graphs).
    """
    import nir

    if not dt > 0:
        raise ValueError(f"dt must be > 0 seconds, got {dt}")
    return {nir.Affine: _affine, nir.LIF: lambda node: NIRLIFStep(node, dt=dt)}
