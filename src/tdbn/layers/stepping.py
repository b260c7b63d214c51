"""One time step of a stream, run by the model's own forward: what the layers with state read while it runs.

:func:`tdbn.stream.step` calls a model's forward on a one-step sequence ``[1, N, ...]`` inside :func:`stepping`.
Four layers then do what a step needs instead of what a sequence needs, each by asking the step object in one
line of its forward:

- :class:`~tdbn.layers.LIF` and the MPBN neuron continue from the potential the stream carries, and hand on the
  new one (``step.lif``, ``step.mpbn``);
- a conv or fc layer inside :class:`~tdbn.layers.TimeDistributed` is computed as the multi-step forward computes
  its ``T*N`` samples, bit for bit (``step.synapse``; PyTorch's CPU kernels are not batch-size invariant);
- a normalization with per-step parameters (TEBN, BNTT, TAB) applies step ``t``'s map (``step.time_norm``).

Every other module, containers included, runs its forward unchanged. The step object is the stream's
(:class:`tdbn.stream.layer_steps.OneStep`); a context variable holds it, so two streams in two threads step one
model independently, and nothing is left behind once the step returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

_current: ContextVar[Any] = ContextVar("tdbn_stream_step", default=None)


@torch.compiler.assume_constant_result
def current() -> Any:
    """The step being run in this thread (None outside :func:`tdbn.stream.step`). A compiled graph takes the value
    it had when traced, None: a stream runs the eager model (:func:`tdbn.stream.step` refuses a compiled one)."""
    return _current.get()


@contextmanager
def stepping(step: Any) -> Iterator[Any]:
    """Inside the block, the layers' forwards take one step of ``step``'s stream."""
    token = _current.set(step)
    try:
        yield step
    finally:
        _current.reset(token)
