"""A trained network made safe to compare spike for spike across simulators, CPUs and thread counts.

Two runs of the same float network agree on a spike only when no membrane potential lies within their rounding
difference of the threshold. Another simulator (other batch shapes), another CPU (other vector widths) or another
thread count sums in another order, so on a trained network a handful of the millions of potentials that sit within
a few ulp of ``v_th`` decide differently, and their differences spread through the later layers. Which ones, and
whether any, depends on the machine (its training produced other weights too).

``tie_free(model, x)`` removes the cause instead of loosening the comparison: the fused network's weights are
rounded to multiples of ``step`` = 2^-8 (of ``k * step`` after an average pool over k
values), its biases to ``(m + 1/4) * step``, and the input to multiples of 2^-4 (the first layer's products and
bias then lie on ``step * 2^-4``, and the same argument holds on that grid, with a gap of 2^-16). Then (tau = 1/4,
``v_th`` a multiple of ``step``):

- the current into a LIF is ``(m + 1/4) * step`` (one conv) or ``(m + 1/2) * step`` (a junction of two convs; the
  spikes of an identity shortcut add whole numbers), never a multiple of ``step``, so ``u_0 != v_th``;
- ``u_1 = u_0 / 4 + I_1`` (or ``I_1`` after a spike) is ``(m + 1/16) * step`` or ``(m + 1/8) * step`` modulo
  ``step / 4``, again never a multiple of ``step``;

so every potential stays at least ``step / 16`` (2.4e-4; 1.5e-5 in the first layer) from the threshold, while the float32 sums are exact or
off by far less. Every correct simulator must then give exactly tdbn's spikes, whatever its summation order and its
comparison at the threshold (``>`` or ``>=``). ``min_threshold_gap`` measures the distance on the inputs used, so a
test checks the argument instead of trusting it.
"""

from __future__ import annotations

import torch
from torch import nn

import tdbn
from tdbn import LIF

STEP = 2.0 ** -8
INPUT_STEP = 2.0 ** -4


@torch.no_grad()
def tie_free(model: nn.Module, x: torch.Tensor, *, step: float = STEP, input_step: float = INPUT_STEP
             ) -> tuple[nn.Module, torch.Tensor]:
    """``(fused copy of model on the grid, x on the input grid)`` (see the module docstring); ``model`` is
    unchanged. The first synaptic layer multiplies analog inputs (multiples of ``input_step``) by weights
    (multiples of ``step``): its grid, and so its bias offset, is ``step * input_step``; every later layer sees
    spikes, whole numbers (or their average over a pooling window of k, multiples of 1/k)."""
    fused = tdbn.fuse(model.eval())
    product = step * input_step  # the grid of the first layer's products; then spikes: step
    pooled = 1  # an average pool of spikes over k values gives multiples of 1/k: the next layer's grid is k * step
    for m in fused.modules():
        if isinstance(m, nn.AvgPool2d):
            kernel = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            pooled = kernel[0] * kernel[1]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            grid = step * pooled
            m.weight.copy_(torch.round(m.weight / grid) * grid)
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.weight.shape[0]), requires_grad=False)
            m.bias.copy_((torch.round(m.bias / product) + 0.25) * product)
            pooled, product = 1, step
    return fused, torch.round(x / input_step) * input_step


@torch.no_grad()
def min_threshold_gap(fused: nn.Module, x: torch.Tensor) -> float:
    """The smallest ``|u - v_th|`` over every LIF, step, sample and neuron of ``fused`` on ``x`` (float64 replay of
    each LIF's recursion on the current it received)."""
    gaps: list[float] = []

    def record(lif: LIF, inputs: tuple, _out: torch.Tensor) -> None:
        current = inputs[0].double()  # [T, N, ...]
        u = torch.zeros_like(current[0])
        for t in range(current.shape[0]):
            u = u + current[t]
            gaps.append(float((u - lif.v_th).abs().min()))
            u = lif.tau * u * (u <= lif.v_th)  # hard reset after a spike (Eq. 1-2)

    hooks = [m.register_forward_hook(record) for m in fused.modules() if isinstance(m, LIF)]
    try:
        fused(x)
    finally:
        for h in hooks:
            h.remove()
    assert gaps, "no LIF layer ran"
    return min(gaps)
