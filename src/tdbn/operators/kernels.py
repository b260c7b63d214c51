"""The kernels each dispatch key's registration runs: one module per implementation, each with the same entry
points and arguments (``integrate``, ``bptt``, ``indexes``, ``pack_bits``, ``unpack_bits``, and where
``indexes`` can say yes the one-pass tdBN and unit kernels ``bn_stats``, ``bn_sums``, ``bn_affine``,
``bn_grad_sums``, ``bn_grad_input``, ``unit_forward``, ``unit_backward``):

- :mod:`tdbn.operators.reference`: plain PyTorch; the default registration of every operator (any device).
- :func:`for_cpu`: :mod:`tdbn.operators.cpu` (the C kernels), or the reference under
  :func:`tdbn.operators.use_reference` (and ``TDBN_NATIVE=0``, or without a C compiler: said once).
- :func:`for_cuda`: :mod:`tdbn.operators.cuda_units` (Triton), or the reference under
  :func:`~tdbn.operators.use_reference` or when ``triton`` is not importable (said once).

The operators' registrations call these at each call (``kernels.for_cpu()``), so a test can put other kernels
in their place with ``monkeypatch``. Each kernel module falls back to the reference itself, inside its entry
points, for operands it cannot index (a dtype, a layout).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch

from . import cpu, reference, switches

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def for_cpu():
    """The CPU's kernels: the C kernels, or the reference under :func:`tdbn.operators.use_reference` (and where
    they cannot be built, said once by :func:`tdbn.operators.cpu.library`)."""
    return cpu if cpu.available() else reference


def for_cuda():
    """CUDA's kernels: Triton's, or the reference under :func:`tdbn.operators.use_reference` and when ``triton``
    is not importable (said once)."""
    if switches.reference_forced():
        return reference
    try:
        from . import cuda_units
    except ImportError as err:
        warn_once("triton", f"tdbn: triton is not importable ({err}); the LIF units on CUDA run the plain PyTorch "
                  "reference loops (same results, slower). pip install 'tdbn[triton]' for the fused kernels.")
        return reference
    return cuda_units


def on_each_device(name: str, impl) -> None:
    """Register ``impl(*inputs, k)`` as operator ``name``'s implementation, ``k`` the kernels of the device it runs
    on (looked up at each call): :func:`for_cpu` for the ``"cpu"`` dispatch key, :func:`for_cuda` for
    ``"cuda"``, the reference for every other device. The dispatcher chooses by the inputs' device; nothing else
    does."""
    torch.library.register_kernel(name, None, lambda *inputs: impl(*inputs, reference))
    torch.library.register_kernel(name, "cpu", lambda *inputs: impl(*inputs, for_cpu()))
    torch.library.register_kernel(name, "cuda", lambda *inputs: impl(*inputs, for_cuda()))


def no_autocast(device: torch.device):
    """Autocast off inside an operator's implementation (the operators cast what they read themselves)."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()
