"""Which kernels an operator runs on each device: the named sets the operator definitions register per
dispatch key (:mod:`tdbn.operators.unit_ops`).

- :data:`REFERENCE`: the plain-PyTorch recursions (:mod:`tdbn.operators.recursions`) and tdBN maths; every
  device, the default registration of every operator.
- :data:`CPU`: the compiled C kernels (:mod:`tdbn.operators.cpu`), built on first use; each call falls back to
  the reference for operands they cannot index (a dtype, a layout), bit-identical where both apply.
- :func:`cuda`: the Triton LIF kernels (:mod:`tdbn.operators.cuda_lif`) with the reference tdBN maths, or the
  reference when ``triton`` is not importable (said once).

The reference on purpose, on the CPU: :func:`tdbn.operators.use_reference`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import recursions

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


def reference() -> Kernels:
    return REFERENCE


def cpu() -> Kernels:
    return CPU


def cuda() -> Kernels:
    try:
        from . import cuda_lif
    except ImportError as err:
        warn_once("triton", f"tdbn: triton is not importable ({err}); the LIF units on CUDA run the plain PyTorch "
                   "reference loops (same results, slower). pip install 'tdbn[triton]' for the fused kernels.")
        return REFERENCE
    return Kernels(cuda_lif.integrate, cuda_lif.bptt, False, False)


def no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else _Null()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
