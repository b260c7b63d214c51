"""Quantization-aware training: the integer network of :func:`tdbn.export.quantize`, trainable.

:class:`FakeQuantNet` wraps a fused network (Eq. 9-10: conv / fc + LIF, no normalization) whose float weights and
biases are the trained ("latent") parameters. Its forward pass is the integer network that :func:`quantize` makes
of those parameters at that moment, computed in integer units:

- every synaptic layer's integers ``W_int = clamp(round(W / s), -q_max, q_max)``, ``b_int = round(b / s)`` with the
  scales of :func:`quantize` (the same functions: :func:`~tdbn.export.quant.lif_scale` shared by the sources of a
  LIF, so the two branches of a residual junction share one scale; :func:`~tdbn.export.quant.decoder_scale`; per
  layer or per channel), from the same float64 real weights (the pooling's ``1/k^2`` and the input unit folded in,
  in the same order), so the integers are those :func:`quantize` gives, bit for bit;
- the input quantized at ``input_bits`` (``X = clamp(round(x / input_scale))``), event counts as they are;
- the LIF on the integer currents: ``U = tau U (1 - o) + I``, spike ``U > Theta`` (Eq. 1-3 with the integer
  threshold), exactly the integer simulation's decisions, ties at ``U = Theta`` included;
- the scores: the decoder's integer output averaged over time, times its scale (Eq. 11, in real units).

The float32 tensors hold these integers (and the membranes, multiples of ``2^-F``) exactly while every partial sum
stays below ``2^24`` (:mod:`tdbn.export.quant_fast`'s bound, checked per layer at every step: float64 otherwise),
so the forward pass equals :meth:`IntegerNet.forward_nodes` spike for spike and output for output.

Backward: the rounding passes the gradient straight through (``d W_int / d W = 1 / s``; the clamp stops it for
weights beyond ``q_max``), the scales are constants of the step (recomputed at every forward pass), and the LIF's
spike uses the network's surrogate (Eq. 16) of width ``a / s`` in integer units. So the gradient with respect to
the real parameters is what the float network's STBP would give at the quantized point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..functional import surrogate as surrogates
from ..messages import warn
from .nir import INPUT, OUTPUT
from .quant import INPUT_BITS, IntegerNet, decoder_scale, lif_scale, quantize, synapse_integers
from .int_ops import node_input
from .quant_fast import FLOAT32, INT64, input_range, plan

__all__ = ["FakeQuantNet"]


class _RoundSTE(torch.autograd.Function):
    """``round`` forward (half to even), identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _Spike(torch.autograd.Function):
    """``1[d > 0]`` forward; backward the surrogate derivative ``sg(d, width)`` (Eq. 16), ``width`` per channel."""

    @staticmethod
    def forward(ctx: Any, d: torch.Tensor, width: torch.Tensor, name: str) -> torch.Tensor:
        ctx.save_for_backward(d, width)
        ctx.name = name
        return (d > 0).to(d.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        d, width = ctx.saved_tensors
        return grad * surrogates.get(ctx.name)(d, width), None, None


def _dense(layer: nn.Module) -> torch.Tensor:
    """The weight of ``layer`` as an ordinary (ungrouped) conv's, differentiably: block diagonal for ``groups > 1``
    (what the NIR walk writes, ``tdbn.export.nir._dense_weight``)."""
    w = layer.weight
    groups = getattr(layer, "groups", 1)
    if groups == 1:
        return w
    K, Cg = w.shape[:2]
    block = torch.arange(K, device=w.device)[:, None] // (K // groups) == \
        torch.arange(Cg * groups, device=w.device)[None, :] // Cg
    return w.repeat(1, groups, *[1] * (w.dim() - 2)) * block.view(K, Cg * groups, *[1] * (w.dim() - 2))


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar, or ``[C]`` viewed to broadcast on axis 1 of ``like`` (``[N, C, ...]``)."""
    return t if t.dim() == 0 else t.view(-1, *[1] * (like.dim() - 2))


class FakeQuantNet(nn.Module):
    """The K-bit integer network of a fused ``model``, trainable (module docstring). ``model`` (its parameters are
    this module's) is kept as it is: after training, ``quantize(net.model, ...)`` with the same settings gives the
    integer network this module computes.

    ``net(x)``: scores ``[N, classes]`` (Eq. 11, real units) of static images ``[N, C, H, W]`` (repeated over the
    model's ``timesteps``) or frames ``[T, N, C, H, W]``; :meth:`forward_nodes`: every node's output in integer
    units, as :meth:`IntegerNet.forward_nodes` returns them.
    """

    def __init__(self, model: nn.Module, *, bits: int, input_shape: Sequence[int], input_scale: float,
                 per_channel: bool = False, input_bits: int = INPUT_BITS):
        super().__init__()
        if model.training:
            raise ValueError("FakeQuantNet needs the fused model in eval mode (tdbn.fuse(model.eval()))")
        self.model = model
        self.bits, self.per_channel, self.input_bits = int(bits), bool(per_channel), int(input_bits)
        self.qmax = 2 ** (self.bits - 1) - 1
        # the graph (order, sources, strides, LIF decays) and its current integers; refreshed by integers()
        self.net: IntegerNet = quantize(model, bits=bits, input_shape=input_shape, input_scale=input_scale,
                                        per_channel=per_channel, input_bits=input_bits)
        self.timesteps = self.net.timesteps
        self.last_kernels: dict[str, torch.dtype] = {}  # per conv / fc / LIF layer, of the last forward pass
        self._warned = False
        self._layers = {name: model.get_submodule(name).module for name, node in self.net.nodes.items()
                        if node.kind in ("conv", "fc") and self._synaptic(name)}
        fed = {s for node in self.net.nodes.values() if node.kind == "lif" for s in node.sources}
        self._decoders = [name for name in self._layers if name not in fed]  # quantize's test: feeds no LIF
        self._lif = {name: (float(m.v_th), m.surrogate, float(m.surrogate_width))
                     for name, m in ((n, model.get_submodule(n)) for n, node in self.net.nodes.items()
                                     if node.kind == "lif")}

    def _synaptic(self, name: str) -> bool:
        """A conv / fc node holding a model layer's weights (not a sum pooling)."""
        try:
            layer = self.model.get_submodule(name)
        except AttributeError:
            return False
        return isinstance(getattr(layer, "module", None), (nn.Conv2d, nn.Linear))

    def integers(self, *, rounding: Any = torch.round) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, Any]]:
        """Per synaptic node ``(W_int, b_int, s)`` (float64 tensors of integer values; the scale ``s``, a float or
        ``[C]``) of the current parameters, and per LIF node ``(Theta, None, s)``: :func:`quantize`'s arithmetic
        (module docstring). The integers are also written into :attr:`net` (int64), which then is the network
        :func:`quantize` would make of the model now."""
        real = {}
        for name, layer in self._layers.items():
            node = self.net.nodes[name]
            w = _dense(layer).to(torch.float64) * node.fold * node.unit  # quantize's order of operations
            b = layer.bias.to(torch.float64) if layer.bias is not None else w.new_zeros(w.shape[0])
            real[name] = (w, b)
        out: dict[str, tuple[torch.Tensor, torch.Tensor | None, Any]] = {}
        for name, node in self.net.nodes.items():
            if node.kind != "lif":
                continue
            theta, scale = lif_scale([real[s][0].detach().cpu().numpy() for s in node.sources], v_th=self._lif[name][0],
                                     qmax=self.qmax, per_channel=self.per_channel)
            for s in node.sources:
                out[s] = (*synapse_integers(*real[s], scale, qmax=self.qmax, rounding=rounding), scale)
            out[name] = (torch.as_tensor(theta, dtype=torch.float64), None, scale)
            node.theta = out[name][0].to(torch.int64)
        for name in self._decoders:
            w, b = real[name]
            scale = decoder_scale(w.detach().cpu().numpy(), qmax=self.qmax)
            out[name] = (*synapse_integers(w, b, scale, qmax=None, rounding=rounding), scale)
            self.net.nodes[name].scale = scale
        for name in self._layers:
            node = self.net.nodes[name]
            node.weight, node.bias = (t.detach().to(torch.int64) for t in out[name][:2])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, q = self._run(x, keep=(OUTPUT,))
        (dec,) = self.net.nodes[OUTPUT].sources
        return values[OUTPUT].mean(0) * float(q[dec][2])

    def forward_nodes(self, x: torch.Tensor, *, keep: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Every node's output ``[T, N, ...]`` in integer units (spikes 0/1 at LIF nodes), for the nodes in ``keep``
        (default all); differentiable with respect to the model's parameters. Each layer in float32, or in float64
        where :mod:`tdbn.export.quant_fast`'s bound says float32 could round (:attr:`last_kernels`)."""
        return self._run(x, keep=keep)[0]

    def _run(self, x: torch.Tensor, *, keep: Sequence[str] | None) -> tuple[dict[str, torch.Tensor], dict]:
        q = self.integers(rounding=_RoundSTE.apply)
        X = self.net.quantize_input(x.detach())
        static = X.dim() == len(self.net.input_shape) + 1
        if static and self.timesteps is None:
            raise ValueError("static input needs timesteps; feed frames [T, N, ...]")
        T = self.timesteps if static else X.shape[0]
        N = X.shape[0] if static else X.shape[1]
        plans = plan(self.net, input_range=input_range(self.net, X), timesteps=T)
        beyond = sorted(n for n, p in plans.items() if p.kernel == INT64)
        if beyond and not self._warned:
            self._warned = True
            warn(f"fake-quantized network: {', '.join(beyond[:3])} need integers beyond 2^53, which float64 can round "
                 "(the integer network computes them in int64); use fewer bits or fewer steps")
        # each layer in float32 where its bound proves it exact, else float64; a layer's input is cast to its type,
        # exactly: the bound covers the input's range too
        self.last_kernels = {n: torch.float32 if p.kernel == FLOAT32 else torch.float64 for n, p in plans.items()}
        values: dict[str, torch.Tensor] = {INPUT: X if static else X.flatten(0, 1)}
        is_static = {INPUT: static}
        for name, node in self.net.nodes.items():
            if node.kind == "input":
                continue
            dtype = self.last_kernels.get(name) or (  # flatten, output: as their sources
                torch.float64 if any(values[s].dtype == torch.float64 for s in node.sources) else torch.float32)
            total, st = node_input(values, is_static, node.sources, T, dtype)
            if node.kind == "lif":
                if st:
                    total, st = total.repeat(T, *[1] * (total.dim() - 1)), False
                values[name] = self._lif_forward(name, node, total.view(T, N, *total.shape[1:]), q[name]).flatten(0, 1)
            elif node.kind in ("conv", "fc"):
                if name in q:
                    w, b = q[name][0].to(dtype), q[name][1].to(dtype)
                else:  # a sum pooling: 0/1 weights, no bias
                    w, b = node.weight.to(dtype), node.bias.to(dtype)
                values[name] = F.conv2d(total, w, b, node.stride, node.padding) if node.kind == "conv" else \
                    F.linear(total, w, b)
            elif node.kind == "flatten":
                values[name] = total.flatten(1)
            else:  # output
                values[name] = total
            is_static[name] = st
        wanted = set(self.net.nodes) if keep is None else set(keep)
        return {n: (v.unsqueeze(0).expand(T, *v.shape) if is_static[n] else v.view(T, N, *v.shape[1:]))
                for n, v in values.items() if n in wanted}, q

    def _lif_forward(self, name: str, node: Any, current: torch.Tensor, q: tuple) -> torch.Tensor:
        """Eq. 1-3 on integer currents ``[T, N, C, ...]``: ``U = tau U (1 - o) + I``, spike ``U > Theta``, the
        surrogate of width ``a / s`` (integer units) in the backward pass."""
        theta, _, scale = q
        v_th, surrogate, width = self._lif[name]
        theta = _per_channel(theta.to(current.dtype), current[0])
        width = _per_channel(torch.as_tensor(width / scale, dtype=current.dtype), current[0])
        tau = node.tau
        spikes = []
        U = current[0]
        for t in range(current.shape[0]):
            if t:
                U = tau * U * (1 - spikes[-1]) + current[t]
            spikes.append(_Spike.apply(U - theta, width, surrogate))
        return torch.stack(spikes)

    def integer_net(self) -> IntegerNet:
        """:func:`quantize` of the model as it is now, with this module's settings (the network to deploy)."""
        return quantize(self.model, bits=self.bits, input_shape=self.net.input_shape,
                        input_scale=self.net.input_scale, per_channel=self.per_channel, input_bits=self.input_bits)
