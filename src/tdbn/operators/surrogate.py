"""Surrogate derivatives of the Heaviside spike function (paper Eq. 16).

The forward pass always fires with ``o = 1[u > v_th]``. Only the backward pass uses a surrogate for
``do/du``. Each surrogate takes ``d = u - v_th`` and the width ``a`` and returns ``do/du``:

- ``"rectangle"`` (the paper's Eq. 16, default): ``(1/a) * 1[|d| < a/2]``
- ``"triangle"``: ``max(0, 1 - |d|/a) / a``
- ``"sigmoid"``: derivative of ``sigmoid(4 d / a)``, i.e. ``(4/a) s (1 - s)``
- ``"atan"``: derivative of ``atan(pi d / a) / pi + 1/2``, i.e. ``(1/a) / (1 + (pi d / a)^2)``

All four integrate to 1 over ``d``, so they are interchangeable in scale.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Tensor = torch.Tensor


def rectangle(d: Tensor, width: float) -> Tensor:
    """Eq. 16: ``(1/a) * 1[|u - v_th| < a/2]``."""
    return (d.abs() < 0.5 * width).to(d.dtype) * (1.0 / width)


def triangle(d: Tensor, width: float) -> Tensor:
    return (1.0 - d.abs() / width).clamp_(min=0.0) * (1.0 / width)


def sigmoid(d: Tensor, width: float) -> Tensor:
    s = torch.sigmoid(d * (4.0 / width))
    return s * (1.0 - s) * (4.0 / width)


def atan(d: Tensor, width: float) -> Tensor:
    return (1.0 / width) / (1.0 + (d * (math.pi / width)).square())


SURROGATES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "rectangle": rectangle,
    "triangle": triangle,
    "sigmoid": sigmoid,
    "atan": atan,
}


#: The index of each surrogate in the compiled CPU kernels (``cpu_kernels.c``) and the Triton kernels: one table for
#: every implementation (the formulas above are the reference each kernel is tested against).
SURROGATE_IDS: dict[str, int] = {name: i for i, name in enumerate(SURROGATES)}


def get(name: str) -> Callable[[Tensor, float], Tensor]:
    """Return the surrogate derivative called ``name``; raise with the valid names otherwise."""
    try:
        return SURROGATES[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; valid: {sorted(SURROGATES)}") from None
