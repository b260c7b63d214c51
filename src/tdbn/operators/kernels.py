"""Which kernels an operator runs on each device: the named sets the operator definitions register per
dispatch key (:mod:`tdbn.operators.unit_ops`).

- :data:`REFERENCE`: the plain-PyTorch recursions (:mod:`tdbn.operators.recursions`) and tdBN maths; every
  device, the default registration of every operator.
- :data:`CPU`: the compiled C kernels (:mod:`tdbn.operators.cpu`), built on first use; each call falls back to
  the reference for operands they cannot index (a dtype, a layout), bit-identical where both apply.
- :func:`for_cuda`: the Triton kernels: the LIF recursions (:mod:`tdbn.operators.cuda_lif`) and the one-pass tdBN
  and unit kernels (:mod:`tdbn.operators.cuda_units`), or the reference when ``triton`` is not importable (said
  once).

:data:`FUSED` is the one-pass tdBN and unit kernels by device (the C kernels for CPU tensors, the Triton ones for
CUDA tensors), which the operators call where a kernel set says ``compiled_tdbn``.

The reference on purpose, on the CPU: :func:`tdbn.operators.use_reference`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from . import cpu, recursions

Tensor = torch.Tensor

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


class Kernels(NamedTuple):
    """The kernels an operator runs on one device: the LIF recursions, whether the compiled tdBN and unit kernels
    of :mod:`tdbn.operators.cpu` apply, and whether ``integrate`` can write spikes without a ``u`` buffer."""

    integrate: Callable
    bptt: Callable
    compiled_tdbn: bool
    integrate_without_u: bool


REFERENCE = Kernels(recursions.integrate_reference, recursions.bptt_reference, False, True)
CPU = Kernels(recursions.integrate, recursions.bptt, True, True)


def for_reference() -> Kernels:
    return REFERENCE


def for_cpu() -> Kernels:
    return CPU


def for_cuda() -> Kernels:
    try:
        from . import cuda_lif
    except ImportError as err:
        warn_once("triton", f"tdbn: triton is not importable ({err}); the LIF units on CUDA run the plain PyTorch "
                   "reference loops (same results, slower). pip install 'tdbn[triton]' for the fused kernels.")
        return REFERENCE
    return Kernels(cuda_lif.integrate, cuda_lif.bptt, True, False)


def no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else _Null()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class FusedKernels:
    """The one-pass tdBN and unit kernels, routed by the operand's device: the compiled C kernels of
    :mod:`tdbn.operators.cpu` for CPU tensors, the Triton kernels of :mod:`tdbn.operators.cuda_units` for the
    devices in ``triton_devices`` (CUDA; tests add the CPU, under Triton's interpreter). The entry points and
    their arguments are :mod:`tdbn.operators.cpu`'s; :meth:`bn_layout` returns None where no kernel applies (the
    reference then runs)."""

    _ENTRY_POINTS = ("bn_stats", "bn_sums", "bn_affine", "bn_grad_sums", "bn_grad_input", "unit_forward",
                     "unit_backward")

    def __init__(self) -> None:
        self.triton_devices = frozenset({"cuda"})

    def _triton(self, x: Tensor):
        """:mod:`tdbn.operators.cuda_units` for a tensor on a Triton device (None without triton)."""
        if x.device.type not in self.triton_devices:
            return None
        try:
            from . import cuda_units
        except ImportError:
            return None
        return cuda_units

    def compute_dtypes(self, x: Tensor):
        """The storage dtypes the unit kernels read on ``x``'s device (16-bit ones computed in float32)."""
        triton_units = self._triton(x)
        return cpu.COMPUTE if triton_units is None else triton_units.COMPUTE

    def bn_layout(self, x: Tensor, *, mixed: bool = False):
        """``(outer, C, inner)`` where the kernels of ``x``'s device apply, else None (see :func:`cpu.bn_layout`)."""
        triton_units = self._triton(x)
        if triton_units is None:
            return cpu.bn_layout(x, mixed=mixed)
        if torch.compiler.is_compiling() or x.numel() == 0 or x.dim() < 3:
            return None
        if x.dtype not in (triton_units.COMPUTE if mixed else (torch.float32, torch.float64)):
            return None
        C = x.shape[2]
        if x.is_contiguous():
            return x.shape[0] * x.shape[1], C, x.numel() // (x.shape[0] * x.shape[1] * C)
        return (x.numel() // C, C, 1) if x.dim() > 3 and x.movedim(2, -1).is_contiguous() else None

    def __getattr__(self, name: str):
        if name not in self._ENTRY_POINTS:
            return getattr(cpu, name)

        def call(x: Tensor, *args, **kwargs):
            # the operand that decides the device: the tensor the layout describes (x, or za of the units)
            operand = x if name not in ("bn_grad_sums", "bn_grad_input", "unit_backward") else args[0]
            triton_units = self._triton(operand)
            if triton_units is None:
                return getattr(cpu, name)(x, *args, **kwargs)
            return _without_layout(getattr(triton_units, name), name, x, args, kwargs)

        return call


#: argument position of ``layout`` in each entry point of :mod:`tdbn.operators.cpu` (after the first operand)
_LAYOUT_AT = {"bn_stats": 0, "bn_sums": 0, "bn_affine": 3, "bn_grad_sums": 2, "bn_grad_input": 5,
              "unit_forward": 3, "unit_backward": 4}


def _without_layout(fn: Callable, name: str, x: Tensor, args: tuple, kwargs: dict):
    """Call a Triton entry point with the CPU entry point's arguments: the same, less ``layout``."""
    at = _LAYOUT_AT[name]
    return fn(x, *args[:at], *args[at + 1:], **kwargs)


FUSED = FusedKernels()


@contextmanager
def triton_units_on(*device_types: str) -> Iterator[None]:
    """Inside the block the one-pass tdBN and unit kernels of Triton run for tensors on ``device_types`` too (the
    CPU under Triton's interpreter, for parity tests): the operators' call sites are unchanged."""
    before = FUSED.triton_devices
    FUSED.triton_devices = before | frozenset(device_types)
    try:
        yield
    finally:
        FUSED.triton_devices = before
