"""Step-by-step inference with explicit state: ``init_state`` and ``step`` (paper Eq. 1-3, 11).

A network in eval mode is a chain of stateless layers (conv, fc, folded or running-statistics tdBN, pooling)
and LIF neurons, whose only memory is their membrane potential. ``step`` runs the model on one time step
``[1, N, ...]`` while every :class:`tdbn.LIF` module of the model advances by one step from the potential
carried in the state (:func:`tdbn.stream.neuron.lif_step`) instead of starting from ``u = 0``; the new
potentials go into the returned state. Nothing survives outside the call: the model is not changed, the state
passed in is not modified, and two streams on one model are two state objects.

How the LIF modules are reached: for the duration of one ``step`` call, each LIF module of the model gets an
instance-level ``forward`` that looks up the stream being stepped in a context variable (so other threads, and
ordinary calls of the model, run the usual multi-step forward) and is removed afterwards. The conv and fc layers
get one too, which computes them with the kernels and row layout of the multi-step forward over ``T*N`` samples
(:mod:`tdbn.stream.exact`; PyTorch's CPU kernels round differently for different batch sizes). Any model whose
spiking nonlinearities are :class:`tdbn.LIF` modules works: every registered model, fused or not, and the
networks read back by :func:`tdbn.export.from_nir`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from ..layers import LIF
from .exact import conv2d_as_batch, linear_as_batch
from .neuron import lif_step

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

    @property
    def scores(self) -> Tensor | None:
        """The time-averaged output after ``steps`` steps, ``[N, K]`` (Eq. 11); ``None`` before the first step."""
        return None if self.outputs is None else self.outputs.mean(0)


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
    return StreamState(batch_size=int(batch_size))


def step(model: nn.Module, x_t: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
    """Feed one time step ``x_t`` (``[N, C, H, W]``, or ``[N, ...]`` for other inputs) through ``model``.

    Returns ``(scores, new_state)``: ``scores [N, K]`` is the decoding output averaged over all steps so far
    (Eq. 11), so after T steps it equals ``model(x)`` on the frames ``x [T, N, ...]`` that were fed; spikes at
    every layer equal those of the multi-step forward bit for bit (tests/stream). ``state`` is left unchanged.
    The conv and fc layers are computed as the multi-step forward over ``T = model.timesteps`` steps computes
    them (:mod:`tdbn.stream.exact`), which is the forward the results are identical to.

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
    lifs = lif_modules(model)
    if state.steps > 0 and set(state.membranes) != set(lifs):
        raise ValueError("this state belongs to another model: its neurons differ from the model's LIF modules")
    T = getattr(model, "timesteps", None) or 1  # the multi-step forward the step reproduces runs T*N samples
    ctx = _Step({m: name for name, m in lifs.items()}, state.membranes if state.steps > 0 else None,
                samples=T * state.batch_size, row=(state.steps % T) * state.batch_size)
    stateless = [m for m in model.modules() if type(m).forward in (nn.Conv2d.forward, nn.Linear.forward)]
    with torch.no_grad(), _stepping(ctx, [*lifs.values(), *stateless]):
        out = _step_output(model, x_t.unsqueeze(0))  # [1, N, K]
    missing = sorted(set(lifs) - set(ctx.new))
    if missing:
        raise RuntimeError(f"LIF module(s) {missing} were not called in this step")
    outputs = out if state.outputs is None else torch.cat([state.outputs, out])
    new = StreamState(state.batch_size, state.steps + 1, MappingProxyType(dict(ctx.new)), outputs)
    return outputs.mean(0), new


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("streaming runs an eval-mode model (tdBN uses its running statistics): call model.eval()")
    if not any(isinstance(m, LIF) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no tdbn.LIF module: nothing carries state between steps")


def _step_output(model: nn.Module, x: Tensor) -> Tensor:
    """The decoding layer's output of one step, ``[1, N, K]``: ``forward_steps`` where the model has it (every
    tdbn network does), else ``forward`` (the mean over one step is that step's output itself)."""
    if hasattr(model, "forward_steps"):
        out = model.forward_steps(x)
    else:
        out = model(x).unsqueeze(0)
    if out.dim() < 2 or out.shape[0] != 1:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for one step; expected [1, N, K]")
    return out


class _Step:
    """One step of one stream: the carried potentials in, the new ones out."""

    def __init__(self, names: dict[LIF, str], previous: Mapping[str, Tensor] | None, *, samples: int, row: int):
        self.names = names
        self.previous = previous
        self.samples = samples  # T*N: the batch of the multi-step forward's stateless layers
        self.row = row  # where this step's N samples sit in it
        self.new: dict[str, Tensor] = {}

    def call(self, module: nn.Module, x: Tensor) -> Tensor:
        if isinstance(module, LIF):
            if module not in self.names:  # a module of another model, stepped in another thread
                return type(module).forward(module, x)
            return self.lif(module, x)
        if isinstance(module, nn.Conv2d):
            return conv2d_as_batch(module, x, self.samples)
        return linear_as_batch(module, x, rows=self.samples, at=self.row)  # type: ignore[arg-type]

    def lif(self, module: LIF, x: Tensor) -> Tensor:
        name = self.names[module]
        if name in self.new:
            raise RuntimeError(
                f"LIF module {name!r} is called twice in one step: a stream keeps one state per module, so a model "
                "must not reuse a LIF instance"
            )
        if x.dim() < 2 or x.shape[0] != 1:
            raise ValueError(f"LIF module {name!r} received shape {tuple(x.shape)} in a step; expected [1, N, ...]")
        u_prev = None if self.previous is None else self.previous[name]
        spikes, u = lif_step(x, u_prev, tau=module.tau, v_th=module.v_th)
        self.new[name] = u
        return spikes


_ACTIVE: contextvars.ContextVar[_Step | None] = contextvars.ContextVar("tdbn_stream_step", default=None)
_LOCK = threading.Lock()
_INSTALLED: dict[int, int] = {}  # id(module) -> number of step calls currently using its forward override


def _override(module: nn.Module):
    cls_forward = type(module).forward

    def forward(x: Tensor) -> Tensor:
        ctx = _ACTIVE.get()
        if ctx is None:  # not stepping in this thread: the usual multi-step forward
            return cls_forward(module, x)
        return ctx.call(module, x)

    forward._tdbn_stream = True  # type: ignore[attr-defined]
    return forward


@contextmanager
def _stepping(ctx: _Step, modules) -> Iterator[None]:
    """Route the LIF modules' forward through ``ctx`` for this thread, for the duration of the block."""
    modules = list(modules)
    with _LOCK:
        for m in modules:
            own = m.__dict__.get("forward")
            if own is not None and not getattr(own, "_tdbn_stream", False):
                raise ValueError(f"a {type(m).__name__} of this model has its own instance-level forward; cannot "
                                 "stream it")
            if _INSTALLED.get(id(m), 0) == 0:
                m.forward = _override(m)
            _INSTALLED[id(m)] = _INSTALLED.get(id(m), 0) + 1
    token = _ACTIVE.set(ctx)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        with _LOCK:
            for m in modules:
                _INSTALLED[id(m)] -= 1
                if _INSTALLED[id(m)] == 0:
                    del _INSTALLED[id(m)]
                    del m.forward
