"""The step of each layer type: an explicit function of (module, one step's input, the stream's state).

A network in eval mode is a tree of containers (``SpikingNet``, ``nn.Sequential``, the residual blocks, a NIR
graph), stateless layers (conv, fc, folded or running-statistics tdBN, pooling, flatten) and LIF neurons, whose
only memory is their membrane potential. :data:`STEP_FUNCTIONS` maps each module type to its step; a
:class:`Walk` carries one step of one stream down the model's structure, looking every module up in it, and
collects the neurons' new potentials. No module is modified and no forward replaced: the tensors between layers
are one step ``[N, ...]`` (no time axis); containers call their children's steps in the order of their forward;
the layers with state or with batch-dependent kernels have step functions of their own:

- :class:`~tdbn.LIF`: one step of Eq. 1-3 from the carried potential (:func:`lif_module_step`);
- ``nn.Conv2d``, ``nn.Linear`` (inside ``TimeDistributed``): computed as the multi-step forward computes them over
  ``T*N`` samples (:func:`tdbn.stream.exact.in_batch`);
- time-first stateless layers (tdBN, ``Flatten``): the module on a one-step sequence ``[1, N, ...]``;
- per-sample stateless layers (pooling, ``nn.Flatten``, ``nn.Identity``, the fused ``ChannelAffine2d``): the module
  on ``[N, ...]``, as ``TimeDistributed`` gives it ``[T*N, ...]``;
- the normalizations with per-step parameters (TEBN, BNTT, TAB): step ``t``'s affine map (running statistics);
  a stream longer than the ``T`` the model was built for keeps the last step's map for every later step (the
  statistics a model learned for its last step are the ones closest to a steady state; TAB's accumulated
  statistics in particular). Exact for the first ``T`` steps, a choice after them;
- the MPBN neuron: one step of its own update from the carried potential (the spikes of the previous step are
  recomputed from it with the running statistics).

A module type with no entry is refused with its name and place in the model; :func:`register_step` adds one. A
subclass uses its base class's step only if it does not override ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..export.nir import INPUT
from ..export.nir_model import NIRNet
from ..layers import LIF, Flatten, MeanOverTime, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF, TimeDistributed
from ..layers.affine import ChannelAffine2d
from ..layers.mpbn import MPBNLIF
from ..layers.temporal_norm import BNTT, TAB, TEBN, _TimeNorm
from ..models import BasicBlock, Bottleneck, SpikingNet
from .exact import in_batch
from ..operators.recursions import step_reference
from .neuron import check_carried

Tensor = torch.Tensor

__all__ = ["STEP_FUNCTIONS", "StepFn", "Walk", "lif_module_step", "register_step", "step_function"]

StepFn = Callable[[nn.Module, Tensor, "Walk"], Tensor]
"""``fn(module, x, walk) -> y``: ``module``'s output for one step ``x [N, ...]``; ``walk`` holds the stream's
state for this step and runs child modules (``walk(child, x)``)."""

STEP_FUNCTIONS: dict[type, StepFn] = {}


def register_step(*types: type) -> Callable[[StepFn], StepFn]:
    """Decorator: ``fn`` is the step of modules of ``types`` (and of their subclasses that keep their forward).

    Example:
        >>> class Twice(nn.Module):
        ...     def forward(self, x):  # [T, N, ...], stateless
        ...         return 2 * x
        >>> @register_step(Twice)
        ... def _twice(module, x, walk):  # one step [N, ...]
        ...     return module(x)
        >>> step_function(Twice()) is _twice
        True
        >>> del STEP_FUNCTIONS[Twice]
    """
    def add(fn: StepFn) -> StepFn:
        for t in types:
            STEP_FUNCTIONS[t] = fn
        return fn
    return add


def step_function(module: nn.Module) -> StepFn | None:
    """The step of ``module``'s type: its own entry, or the nearest base class's if ``forward`` is inherited."""
    cls = type(module)
    for base in cls.__mro__:
        fn = STEP_FUNCTIONS.get(base)
        if fn is not None:
            return fn if cls.forward is base.forward else None
    return None


class Walk:
    """One step of one stream through ``model``: the carried potentials in, the new ones out.

    ``samples`` (``T*N``) and ``row`` (``t*N`` at step ``t``) say where this step's ``N`` samples sit in the batch
    of the multi-step forward's stateless layers; ``step``: the steps the stream has taken before this one.
    """

    def __init__(self, model: nn.Module, names: Mapping[LIF, str], previous: Mapping[str, Tensor] | None, *,
                 samples: int, row: int, step: int = 0):
        self.model = model
        self.step = step
        self.names = names
        self.previous = previous
        self.samples = samples
        self.row = row
        self.new: dict[str, Tensor] = {}
        self.averaged = False  # a MeanOverTime has run: it must be the model's last layer

    def __call__(self, module: nn.Module, x: Tensor) -> Tensor:
        """``module``'s output for this step's input ``x [N, ...]``."""
        if self.averaged:
            raise ValueError("MeanOverTime must be the model's last layer to stream it: the scores of a stream are "
                             "the mean of its steps' outputs")
        fn = step_function(module)
        if fn is None:
            raise TypeError(
                f"tdbn.stream cannot step {self._where(module)}: no step function for {type(module).__qualname__}"
                f"{' (it overrides forward)' if any(isinstance(module, t) for t in STEP_FUNCTIONS) else ''}; "
                f"supported: {', '.join(sorted(t.__name__ for t in STEP_FUNCTIONS))}; add one with "
                f"tdbn.stream.register_step({type(module).__name__})"
            )
        return fn(module, x, self)

    def carried(self, lif: LIF) -> tuple[str, Tensor | None]:
        """The state's name for ``lif`` and its potential after the previous step (None at the first step)."""
        name = self.names.get(lif)
        if name is None:
            raise RuntimeError(f"{self._where(lif)} is not a registered submodule of the model being stepped")
        if name in self.new:
            raise RuntimeError(
                f"LIF module {name!r} is called twice in one step: a stream keeps one state per module, so a model "
                "must not reuse a LIF instance"
            )
        return name, None if self.previous is None else self.previous[name]

    def _where(self, module: nn.Module) -> str:
        name = next((n for n, m in self.model.named_modules() if m is module), None)
        return f"{type(module).__name__} {name!r}" if name else f"the model ({type(module).__name__})"


def lif_module_step(lif: LIF, x: Tensor, u_prev: Tensor | None) -> tuple[Tensor, Tensor]:
    """One step of ``lif`` (Eq. 1-3) on ``x [N, ...]`` from the potential ``u_prev`` (None: ``u = 0``): spikes
    ``[N, ...]`` and the new potential ``u`` (before reset).

    ``u = x + tau * u_prev * (u_prev <= v_th)`` is the recursions' own update
    (:func:`tdbn.operators.recursions.step_reference`, what :func:`tdbn.stream.lif_step` runs); the spikes are then
    the module itself on the one-step sequence ``[u]`` (from rest, ``u[0]`` is its input): its own kernels, the
    LIF evaluated once per step, and its forward hooks see every step.
    """
    if u_prev is None:
        u = x.clone()  # the state owns it
    else:
        check_carried(u_prev, x.shape)
        u = step_reference(x, u_prev.to(x.dtype), lif.tau, lif.v_th)
    return lif(u.unsqueeze(0))[0], u


@register_step(LIF)
def _lif(lif: LIF, x: Tensor, walk: Walk) -> Tensor:
    name, u_prev = walk.carried(lif)
    spikes, walk.new[name] = lif_module_step(lif, x, u_prev)
    return spikes


@register_step(nn.Sequential, TdBNLIF)
def _in_order(seq: nn.Sequential, x: Tensor, walk: Walk) -> Tensor:
    """Children one after the other (a unit in eval mode runs ``conv|fc -> bn -> lif`` so too)."""
    for child in seq:
        x = walk(child, x)
    return x


@register_step(BasicBlock, Bottleneck)
def _residual_block(block: nn.Module, x: Tensor, walk: Walk) -> Tensor:
    """``lif(residual(x) + shortcut(x))`` (Fig. 5b): the junction neuron fed by both branches."""
    return walk(block.lif, walk(block.residual, x) + walk(block.shortcut, x))


@register_step(SpikingNet)
def _spiking_net(net: SpikingNet, x: Tensor, walk: Walk) -> Tensor:
    """One frame ``[N, C, H, W]`` through ``encoder -> body -> head -> decoder``: the decoding output ``[N, K]``."""
    if x.dim() != 4 or x.shape[1] != net.in_channels or not x.is_floating_point():
        raise ValueError(f"expected one floating-point frame [N, {net.in_channels}, H, W] per step, got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    for part in (net.encoder, net.body, net.head, net.decoder):
        x = walk(part, x)
    return x


@register_step(NIRNet)
def _nir_net(net: NIRNet, x: Tensor, walk: Walk) -> Tensor:
    """The graph's nodes in topological order; a node with several inputs receives their sum."""
    if tuple(x.shape[1:]) != net.input_shape:
        raise ValueError(f"expected one step [N, {', '.join(map(str, net.input_shape))}], got shape {tuple(x.shape)}")
    values = {INPUT: x}
    for name, layer in zip(net.names, net.layers):
        srcs = net.inputs[name]
        total = values[srcs[0]]
        for s in srcs[1:]:
            total = total + values[s]  # summed in the order of NIRNet.forward_nodes
        values[name] = walk(layer, total)
    return values[net.output]


@register_step(TimeDistributed)
def _time_distributed(td: TimeDistributed, x: Tensor, walk: Walk) -> Tensor:
    """The wrapped per-sample layer on the step's ``N`` samples."""
    return walk(td.module, x)


@register_step(nn.Conv2d, nn.Linear)
def _synapse(layer: nn.Conv2d | nn.Linear, x: Tensor, walk: Walk) -> Tensor:
    return in_batch(layer, x, samples=walk.samples, row=walk.row)


@register_step(ChannelAffine2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)
def _per_sample(layer: nn.Module, x: Tensor, walk: Walk) -> Tensor:
    """A stateless layer computing each sample (and channel) alone: the same at any batch size."""
    return layer(x)


@register_step(TdBatchNorm1d, TdBatchNorm2d, Flatten)
def _time_first(layer: nn.Module, x: Tensor, walk: Walk) -> Tensor:
    """A stateless time-first layer on the one-step sequence ``[1, N, ...]``."""
    return layer(x.unsqueeze(0))[0]


@register_step(TEBN, BNTT, TAB)
def _per_step_norm(norm: _TimeNorm, x: Tensor, walk: Walk) -> Tensor:
    """Step ``t``'s affine map (the last step's after ``T`` steps), as the multi-step forward applies it."""
    t = min(walk.step, norm.timesteps - 1)
    scale, shift = norm.step_affine()
    shape = (1, norm.num_features) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift[t].reshape(shape), x, scale[t].reshape(shape))


@register_step(MPBNLIF)
def _mpbn_lif(lif: MPBNLIF, x: Tensor, walk: Walk) -> Tensor:
    name, u_prev = walk.carried(lif)
    o_prev = None
    if u_prev is not None:
        check_carried(u_prev, x.shape)
        o_prev = (lif.margin(u_prev) > 0).to(x.dtype)  # as the forward pass fired
    spikes, walk.new[name] = lif.step(x, u_prev, o_prev)
    return spikes


@register_step(MeanOverTime)
def _mean_over_time(layer: MeanOverTime, x: Tensor, walk: Walk) -> Tensor:
    """The readout (Eq. 11): a step returns its output, and the stream's scores are the mean over its steps."""
    walk.averaged = True
    return x
