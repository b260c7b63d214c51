"""The two switches of the op layer, for comparisons and benchmarks: the lean training path, and the reference
kernels on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import cpu

# plain module flags (not ContextVars): torch.compile reads them and guards on their values
_lean = True
_reference = False


def reference_forced() -> bool:
    """True inside :func:`use_reference`."""
    return _reference


def lean_enabled() -> bool:
    """True unless turned off by :func:`lean_training`."""
    return _lean


@contextmanager
def lean_training(enabled: bool) -> Iterator[None]:
    """Turn the lean training path on or off inside the block (on by default). Off, every unit runs its modules
    one after the other and autograd stores what the plain formulation stores; values and gradients are the same
    either way (up to float rounding in tdBN). For comparisons and benchmarks.

    Example:
        >>> unit = tdbn.layers.TdBNLIF(tdbn.TdBatchNorm1d(3), tdbn.LIF())
        >>> z = torch.randn(4, 2, 3, requires_grad=True)
        >>> def big_saved(enabled):  # tensors of z's size that autograd keeps for backward
        ...     saved = []
        ...     with lean_training(enabled), torch.autograd.graph.saved_tensors_hooks(
        ...             lambda t: saved.append(t) or t, lambda t: t):
        ...         unit(z)
        ...     return sum(t.numel() == z.numel() for t in saved)
        >>> big_saved(True)  # the unit: z only (u is recomputed in backward)
        1
        >>> big_saved(False)  # F.batch_norm keeps z, the LIF keeps u
        2
    """
    global _lean
    before, _lean = _lean, bool(enabled)
    try:
        yield
    finally:
        _lean = before


@contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Inside the block the operators run the plain-PyTorch reference (:mod:`tdbn.operators.reference`) on every
    device, instead of the compiled CPU kernels or CUDA's Triton kernels (the same values: bit for bit in
    float32/float64 on the CPU, see the parity tests), e.g. for parity checks, benchmarks, or on a machine without
    a C compiler (where the reference runs on the CPU anyway, said once). ``TDBN_NATIVE=0`` in the environment does
    the same on the CPU for a whole process. :func:`tdbn.operators.kernels.for_cpu` and
    :func:`~tdbn.operators.kernels.for_cuda` read it.

    Example:
        >>> with use_reference():
        ...     s = tdbn.functional.lif(torch.ones(3, 2))  # the ATen loops
    """
    global _reference
    before, _reference = _reference, bool(enabled)
    try:
        with cpu.enabled(not enabled):
            yield
    finally:
        _reference = before
