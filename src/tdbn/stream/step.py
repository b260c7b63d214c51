"""Step-by-step inference with explicit state: ``init_state`` and ``step`` (paper Eq. 1-3, 11).

A network in eval mode is a chain of stateless layers (conv, fc, folded or running-statistics tdBN, pooling)
and LIF neurons, whose only memory is their membrane potential. ``step`` runs the model's own forward on one time
step, as the sequence ``[1, N, ...]``, with a :class:`~tdbn.stream.layer_steps.OneStep` as the step the layers
ask (:mod:`tdbn.layers.stepping`): every :class:`tdbn.LIF` advances by one step from the potential carried in the
state instead of starting from ``u = 0``, and the new potentials go into the returned state. Nothing survives
outside the call: the model is not changed, the state passed in is not modified, and two streams on one model, in
one thread or several, are two state objects. Every registered model works, fused or not, and the networks read
back by :func:`tdbn.export.from_nir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from ..export.nir_model import NIRNet
from ..layers import LIF
from ..layers.stepping import stepping
from ..models import SpikingNet
from .layer_steps import OneStep, check_steppable

Tensor = torch.Tensor

__all__ = ["StreamState", "init_state", "lif_modules", "step"]


@dataclass(frozen=True)
class StreamState:
    """Everything a stream carries from one step to the next.

    Attributes:
        batch_size: N, the number of independent streams stepped together.
        steps: time steps taken so far (0 for a fresh state).
        membranes: per LIF module (by its qualified name in the model), the membrane potentials ``u`` after the
            last step, before its reset, ``[N, ...]``; empty before the first step.
        outputs: the decoding layer's output at every step so far, ``[steps, N, K]`` (``None`` before the first
            step); the scores are their mean (Eq. 11), computed exactly as the multi-step forward does.
    """

    batch_size: int
    steps: int = 0
    membranes: Mapping[str, Tensor] = field(default_factory=lambda: MappingProxyType({}))
    outputs: Tensor | None = None
    _plan: _Plan | None = field(default=None, compare=False, repr=False)  # the model's, checked once

    @property
    def scores(self) -> Tensor | None:
        """The time-averaged output after ``steps`` steps, ``[N, K]`` (Eq. 11); ``None`` before the first step."""
        return None if self.outputs is None else self.outputs.mean(0)


@dataclass(frozen=True)
class _Plan:
    """What a step needs to know of a model, found by one walk over its modules when a stream starts
    (:func:`init_state`) and handed on from state to state: the model it was made for, and its neurons by name.
    Every module type was checked (:func:`~tdbn.stream.layer_steps.check_steppable`)."""

    model: nn.Module
    lifs: Mapping[nn.Module, str]
    names: frozenset[str]


def _plan_of(model: nn.Module) -> _Plan:
    lifs = lif_modules(model)
    if not lifs:
        raise ValueError(f"{type(model).__name__} has no tdbn.LIF module: nothing carries state between steps")
    check_steppable(model)
    return _Plan(model, MappingProxyType({m: name for name, m in lifs.items()}), frozenset(lifs))


def lif_modules(model: nn.Module) -> dict[str, LIF]:
    """The :class:`tdbn.LIF` modules of ``model`` by qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}


def init_state(model: nn.Module, batch_size: int = 1) -> StreamState:
    """A fresh state for ``batch_size`` streams through ``model``: every neuron at ``u = 0``, no step taken.

    Raises ``ValueError`` if ``model`` is in training mode (tdBN would normalize each step by its own batch
    statistics: stream an eval-mode model, ``model.eval()``) or has no :class:`tdbn.LIF` module.

    Example:
        >>> model = tdbn.models.create("resnet19", num_classes=10, width=0.125, timesteps=2).eval()
        >>> state = init_state(model, batch_size=3)
        >>> state.steps, len(state.membranes)
        (0, 0)
    """
    _check_model(model)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return StreamState(batch_size=int(batch_size), _plan=_plan_of(model))


def step(model: nn.Module, x_t: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
    """Feed one time step ``x_t`` (``[N, C, H, W]``, or ``[N, ...]`` for other inputs) through ``model``.

    Returns ``(scores, new_state)``: ``scores [N, K]`` is the decoding output averaged over all steps so far
    (Eq. 11), so after T steps it equals ``model(x)`` on the frames ``x [T, N, ...]`` that were fed; spikes at
    every layer equal those of the multi-step forward bit for bit (tests/stream). ``state`` is left unchanged.
    The conv and fc layers are computed as the multi-step forward over ``T = model.timesteps`` steps computes
    them (:mod:`tdbn.stream.exact`), which is the forward the results are identical to. Raises ``TypeError``
    naming a module whose type a step does not know to compute each time step on its own
    (:func:`tdbn.stream.register_step`).

    Example:
        >>> model = tdbn.models.create("resnet19", num_classes=10, width=0.125, timesteps=3).eval()
        >>> x = torch.rand(3, 2, 3, 32, 32)  # [T, N, C, H, W]
        >>> state = init_state(model, batch_size=2)
        >>> for t in range(3):
        ...     scores, state = step(model, x[t], state)
        >>> torch.equal(scores, model(x))
        True
    """
    _check_model(model)
    if not isinstance(state, StreamState):
        raise TypeError(f"state must be a StreamState (from tdbn.stream.init_state), got {type(state).__name__}")
    if x_t.dim() < 1 or x_t.shape[0] != state.batch_size:
        raise ValueError(
            f"expected one time step [N={state.batch_size}, ...] (the state's batch size), got shape "
            f"{tuple(x_t.shape)}; pass frames[t], not the whole [T, N, ...] sequence"
        )
    if isinstance(model, SpikingNet) and (x_t.dim() != 4 or x_t.shape[1] != model.in_channels
                                          or not x_t.is_floating_point()):
        raise ValueError(f"expected one floating-point frame [N, {model.in_channels}, H, W] per step, got "
                         f"{x_t.dtype} of shape {tuple(x_t.shape)}")
    plan = state._plan if state._plan is not None and state._plan.model is model else _plan_of(model)
    if state.steps > 0 and state.membranes.keys() != plan.names:
        raise ValueError("this state belongs to another model: its neurons differ from the model's LIF modules")
    T = getattr(model, "timesteps", None) or 1  # the multi-step forward the step reproduces runs T*N samples
    one = OneStep(plan.lifs, state.membranes if state.steps > 0 else None,
                  samples=T * state.batch_size, row=(state.steps % T) * state.batch_size, step=state.steps)
    with torch.no_grad(), stepping(one):
        x = x_t.unsqueeze(0)  # the one-step sequence [1, N, ...]
        out = model.forward_steps(x) if isinstance(model, (SpikingNet, NIRNet)) else model(x)
    if out.dim() == 3 and out.shape[0] == 1:
        out = out[0]  # the step's output [N, K] (a model ending in MeanOverTime gives it averaged already)
    if out.dim() < 1 or out.shape[0] != state.batch_size:
        raise ValueError(f"the model's step output has shape {tuple(out.shape)}; expected [N={state.batch_size}, K]")
    missing = sorted(plan.names - one.new.keys())
    if missing:
        raise RuntimeError(f"LIF module(s) {missing} were not called in this step")
    outputs = out.unsqueeze(0) if state.outputs is None else torch.cat([state.outputs, out.unsqueeze(0)])
    new = StreamState(state.batch_size, state.steps + 1, MappingProxyType(dict(one.new)), outputs, plan)
    return outputs.mean(0), new


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("streaming runs an eval-mode model (tdBN uses its running statistics): call model.eval()")
