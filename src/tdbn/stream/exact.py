"""A step's conv and fc layers computed bit for bit as the multi-step forward computes them, without predicting
PyTorch's kernel choices.

The multi-step forward runs a conv or fc layer once over the ``T*N`` samples of a sequence (``TimeDistributed``);
a step has ``N``. PyTorch does not promise that a sample's result is the same at every batch size, and on the CPU
it is not: ``F.conv2d`` may take another kernel for one sample than for ``T*N`` (oneDNN or its own im2col), and
a BLAS ``gemm`` sums a row differently depending on how many rows there are. Which kernel ATen picks is a private
rule that any release may change, so a step does not mirror it; it measures. The first time a layer configuration
(shapes, dtype, memory layout, thread count) is seen, :func:`kernel_plan` runs the layer on random data the way
the multi-step forward does, over ``T*N`` samples, and each candidate way of computing ``N`` of them at each of the
``T`` positions a step can have, and keeps the cheapest that reproduces those ``T*N`` results bit for bit:

- ``"direct"``: the layer on the ``N`` samples, the usual call;
- ``"onednn"`` (conv on the CPU): oneDNN's convolution on the ``N`` samples (``torch.mkldnn_convolution``;
  oneDNN gives a sample the same result at any batch size, so this is the kernel ``F.conv2d`` uses where it picks
  oneDNN for ``T*N`` samples and not for ``N``);
- ``"padded"``: the layer on ``T*N`` samples, the step's own at the rows the multi-step forward gives them
  (step ``t``: rows ``t*N .. t*N+N-1``) and zeros elsewhere: the multi-step forward's own call, right by
  construction, at ``T`` times the work (the small fc layers usually take it).

The plans are kept per configuration for the life of the process, so only the first step through a model pays
for the probes (about two multi-step forwards of its conv and fc layers). A torch release that changed the kernels
would change the plans, not the results; ``tests/stream/test_stream_exact.py`` fails if a conv of the paper's
networks stops having a fast plan.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
Layer = nn.Conv2d | nn.Linear

__all__ = ["PLANS", "in_batch", "kernel_plan"]

PLANS = ("direct", "onednn", "padded")  # cheapest first
_plans: dict[tuple, str] = {}
# per layer: its plan by what a step can change (shapes, dtypes, strides, threads), so that a step does not spell
# out the full configuration of every conv again (the layer's own geometry does not change under a stream)
_seen: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def in_batch(layer: Layer, x: Tensor, *, samples: int, row: int) -> Tensor:
    """``layer(x)`` for the ``N`` samples ``x [N, ...]`` of one step, equal bit for bit to their rows
    ``row .. row+N-1`` of ``layer`` over the ``samples = T*N`` samples of the multi-step forward."""
    n = x.shape[0]
    if samples <= n:
        return _direct(layer, x, layer.weight, layer.bias)
    plan = kernel_plan(layer, x, samples)
    if plan == "padded":
        return _padded(layer, x, layer.weight, layer.bias, samples=samples, row=row)
    return _KERNELS[plan](layer, x, layer.weight, layer.bias)


def kernel_plan(layer: Layer, x: Tensor, samples: int) -> str:
    """How a step computes ``layer`` on ``x [N, ...]`` so that it equals the ``samples``-sample forward: one of
    :data:`PLANS`, measured once per configuration (see the module docstring)."""
    w = layer.weight
    quick = (w.shape, w.dtype, w.stride(), layer.bias is not None, x.shape, x.dtype, x.device, x.stride(), samples,
             torch.get_num_threads(), torch.backends.mkldnn.enabled)
    seen = _seen.setdefault(layer, {})
    plan = seen.get(quick)
    if plan is None:  # the full configuration (the same for every layer like this one): probed once per process
        key = _config(layer, x, samples)
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = _probe(layer, x, samples)
        seen[quick] = plan
    return plan


def _direct(layer: Layer, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, w, b)  # what Conv2d.forward calls: every padding mode
    return F.linear(x, w, b)


def _onednn(layer: Layer, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return torch.mkldnn_convolution(x, w, b, list(layer.padding), list(layer.stride), list(layer.dilation),
                                    layer.groups)


_KERNELS: dict[str, Callable[[Layer, Tensor, Tensor, Tensor | None], Tensor]] = {
    "direct": _direct, "onednn": _onednn,
}


def _padded(layer: Layer, x: Tensor, w: Tensor, b: Tensor | None, *, samples: int, row: int) -> Tensor:
    n = x.shape[0]
    full = x.new_zeros((samples, *x.shape[1:])).contiguous(memory_format=_memory_format(x))
    full[row:row + n] = x
    return _direct(layer, full, w, b)[row:row + n]


def _memory_format(t: Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _candidates(layer: Layer, x: Tensor) -> list[str]:
    out = ["direct"]
    if (isinstance(layer, nn.Conv2d) and x.device.type == "cpu" and x.dim() == 4
            and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        out.append("onednn")
    return out


def _config(layer: Layer, x: Tensor, samples: int) -> tuple:
    """Everything a kernel choice can depend on, without the values."""
    w = layer.weight
    conv = (layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode) \
        if isinstance(layer, nn.Conv2d) else ()
    return (type(layer).__name__, tuple(w.shape), w.dtype, _memory_format(w), layer.bias is not None, conv,
            tuple(x.shape), x.dtype, x.device, _memory_format(x), samples, torch.get_num_threads(),
            torch.backends.mkldnn.enabled)


@torch.no_grad()
def _probe(layer: Layer, x: Tensor, samples: int) -> str:
    """The cheapest plan whose ``N``-sample results equal the ``samples``-sample call at every position, on
    random inputs and weights (a private generator: the global random state is left alone)."""
    n = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(0)

    def rand(shape, like: Tensor, scale: float = 1.0) -> Tensor:
        t = torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype) * scale
        return t.contiguous(memory_format=_memory_format(like))

    w = rand(layer.weight.shape, layer.weight, scale=layer.weight[0].numel() ** -0.5)
    b = None if layer.bias is None else rand(layer.bias.shape, layer.bias)
    xs = rand((samples, *x.shape[1:]), x).abs()  # [T*N, ...]
    ref = _direct(layer, xs, w, b)
    rows = [slice(r, r + n) for r in range(0, samples - n + 1, n)]
    for plan in _candidates(layer, x):
        try:
            if all(torch.equal(_KERNELS[plan](layer, xs[r], w, b), ref[r]) for r in rows):
                return plan
        except RuntimeError:  # a kernel this build or these arguments do not support
            continue
    if not all(torch.equal(_padded(layer, xs[r], w, b, samples=samples, row=r.start), ref[r]) for r in rows):
        warnings.warn(f"tdbn.stream: {type(layer).__name__} {tuple(layer.weight.shape)} on {tuple(x.shape)} does "
                      f"not give a sample the same result inside a batch of {samples} at every position; streamed "
                      "outputs may differ from the multi-step forward in the last bits", RuntimeWarning, stacklevel=2)
    return "padded"
