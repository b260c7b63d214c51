"""One step of a stream through the model's own forward: the step object the stateful layers ask, and which
module types may run.

:func:`tdbn.stream.step` runs ``model`` on a one-step sequence ``[1, N, ...]`` inside
:func:`tdbn.layers.stepping.stepping`, with a :class:`OneStep` as the step. Containers (``SpikingNet``,
``nn.Sequential``, the units, the residual blocks, a NIR graph) and stateless layers run their own forward; four
layers ask the step object instead, each in one line of its forward:

- :class:`~tdbn.LIF`: continues from the potential the stream carries, ``tdbn.functional.lif(x, u0=u[t-1])``
  (:meth:`OneStep.lif`): the LIF operator evaluated once per step, whose first step is the recursion's own update,
  so spikes and potentials equal the multi-step forward's bit for bit;
- the MPBN neuron: one step of its own update from the carried potential, the previous step's spikes recomputed
  from it with the running statistics (:meth:`OneStep.mpbn`);
- ``nn.Conv2d``, ``nn.Linear`` inside ``TimeDistributed``: computed as the multi-step forward computes them over
  ``T*N`` samples (:func:`tdbn.stream.exact.in_batch`, :meth:`OneStep.synapse`);
- the normalizations with per-step parameters (TEBN, BNTT, TAB): step ``t``'s affine map (running statistics); a
  stream longer than the ``T`` the model was built for keeps the last step's map for every later step (the
  statistics a model learned for its last step are the ones closest to a steady state; TAB's accumulated
  statistics in particular). Exact for the first ``T`` steps, a choice after them (:meth:`OneStep.time_norm`).

What no table can tell from the outside is whether a module of another type computes each time step on its own (a
module may keep state, or mix time steps, e.g. a difference of consecutive steps): such a module would stream
silently wrong. So the module types a step runs are listed (:data:`STEPPABLE`), a model with any other type is
refused with its name and place before anything runs, and :func:`register_step` adds a type its author knows to
compute each step on its own. A subclass counts as its base only if it does not override ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..export.nir_model import NIRNet
from ..layers import LIF, Flatten, MeanOverTime, TdBatchNorm1d, TdBatchNorm2d, TdBNLIF, TimeDistributed
from ..layers.affine import ChannelAffine2d
from ..layers.mpbn import MPBNLIF
from ..layers.temporal_norm import BNTT, TAB, TEBN, _TimeNorm
from ..models import AnalogEncoder, BasicBlock, Bottleneck, MembraneBlock, SpikingNet
from .exact import in_batch
from .neuron import check_carried, lif_step

Tensor = torch.Tensor

__all__ = ["STEPPABLE", "OneStep", "check_steppable", "register_step", "steppable"]

STEPPABLE: set[type] = {
    # containers: their forward composes their children
    SpikingNet, NIRNet, nn.Sequential, TdBNLIF, BasicBlock, Bottleneck, TimeDistributed,
    MembraneBlock, AnalogEncoder,  # a block adds per step; the encoder is its conv and norm
    nn.ModuleList, nn.ModuleDict,  # (hold modules; their owner's forward calls them)
    # the layers that ask the step (above)
    LIF, MPBNLIF, nn.Conv2d, nn.Linear, TEBN, BNTT, TAB,
    # stateless, each step on its own: the same on a one-step sequence as on each step of a sequence
    TdBatchNorm1d, TdBatchNorm2d, Flatten, ChannelAffine2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.Identity,
    # the readout: the scores of a stream are the mean of its steps' outputs (it must come last)
    MeanOverTime,
}
"""The module types a step runs (their subclasses that keep ``forward`` too)."""


def register_step(*types: type) -> type:
    """Declare module types that compute each time step on their own (no state, nothing mixed across steps): a
    stream runs their forward on the one-step sequence. Returns the first type, so it also decorates a class.

    Example:
        >>> @register_step
        ... class Twice(nn.Module):
        ...     def forward(self, x):  # [T, N, ...], each step on its own
        ...         return 2 * x
        >>> steppable(Twice())
        True
        >>> STEPPABLE.discard(Twice)
    """
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(f"register_step takes nn.Module subclasses, got {types!r}")
    STEPPABLE.update(types)
    return types[0]


def steppable(module: nn.Module) -> bool:
    """Whether a step runs ``module``: its type is listed, or a listed base class's whose ``forward`` it keeps."""
    cls = type(module)
    for base in cls.__mro__:
        if base in STEPPABLE:
            return cls.forward is base.forward
    return False


def check_steppable(model: nn.Module) -> None:
    """Raise ``TypeError`` naming the first module a step cannot run (type and place in ``model``), and
    ``ValueError`` for a ``MeanOverTime`` anywhere but last."""
    for name, module in model.named_modules():
        if not steppable(module):
            cls = type(module)
            where = f"{cls.__name__} {name!r}" if name else f"the model ({cls.__name__})"
            overrides = any(isinstance(module, t) for t in STEPPABLE)
            raise TypeError(
                f"tdbn.stream cannot step {where}: {cls.__qualname__} is not known to compute each time step on "
                f"its own{' (it overrides forward)' if overrides else ''}; supported: "
                f"{', '.join(sorted(t.__name__ for t in STEPPABLE))}; if it does, declare it with "
                f"tdbn.stream.register_step({cls.__name__})"
            )
        if isinstance(module, MeanOverTime) and module is not _last(model):
            raise ValueError("MeanOverTime must be the model's last layer to stream it: the scores of a stream are "
                             "the mean of its steps' outputs")


def _last(model: nn.Module) -> nn.Module:
    while isinstance(model, nn.Sequential) and len(model):
        model = model[-1]
    return model


class OneStep:
    """One step of one stream: the potentials carried in (``previous``, by neuron name; None at the first step),
    the new ones out (:attr:`new`).

    ``samples`` (``T*N``) and ``row`` (``t*N`` at step ``t``) say where this step's ``N`` samples sit in the batch
    of the multi-step forward's conv and fc layers; ``step``: the steps the stream has taken before this one.
    """

    def __init__(self, names: Mapping[nn.Module, str], previous: Mapping[str, Tensor] | None, *, samples: int,
                 row: int, step: int = 0):
        self.names = names
        self.previous = previous
        self.samples = samples
        self.row = row
        self.step = step
        self.new: dict[str, Tensor] = {}

    def lif(self, lif: LIF, x: Tensor) -> Tensor:
        """Spikes ``[1, N, ...]`` of ``lif`` on the one-step ``x``, from the carried potential (Eq. 1-3)."""
        name, u_prev = self._carried(lif, x)
        spikes, self.new[name] = lif_step(x, u_prev, tau=lif.tau, v_th=lif.v_th)
        return spikes

    def mpbn(self, lif: MPBNLIF, x: Tensor) -> Tensor:
        """Spikes ``[1, N, ...]`` of the MPBN neuron on the one-step ``x``, from the carried potential."""
        name, u_prev = self._carried(lif, x)
        o_prev = None if u_prev is None else (lif.margin(u_prev) > 0).to(x.dtype)  # as the forward pass fired
        spikes, self.new[name] = lif.step(x[0], u_prev, o_prev)
        return spikes.unsqueeze(0)

    def synapse(self, layer: nn.Conv2d | nn.Linear, x: Tensor) -> Tensor:
        """``layer`` on the one-step ``x [1, N, ...]``, equal bit for bit to its rows of the multi-step forward."""
        return in_batch(layer, x[0], samples=self.samples, row=self.row).unsqueeze(0)

    def time_norm(self, norm: _TimeNorm, x: Tensor) -> Tensor:
        """Step ``t``'s affine map (the last step's after ``T`` steps), as the multi-step forward applies it."""
        t = min(self.step, norm.timesteps - 1)
        scale, shift = norm.step_affine()
        return norm._affine(x, scale[t], shift[t])  # the multi-step forward's multiply-add, one step's [C] map

    def _carried(self, neuron: nn.Module, x: Tensor) -> tuple[str, Tensor | None]:
        if x.dim() < 2 or x.shape[0] != 1:
            raise ValueError(f"a stream's step feeds its neurons one step [1, N, ...], got shape {tuple(x.shape)}")
        name = self.names.get(neuron)
        if name is None:
            raise RuntimeError(f"a {type(neuron).__name__} that is not a registered submodule of the model being "
                               "stepped was called")
        if name in self.new:
            raise RuntimeError(
                f"LIF module {name!r} is called twice in one step: a stream keeps one state per module, so a model "
                "must not reuse a LIF instance"
            )
        u_prev = None if self.previous is None else self.previous[name]
        if u_prev is not None:
            check_carried(u_prev, x.shape[1:])
        return name, u_prev
