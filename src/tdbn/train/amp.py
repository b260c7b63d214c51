"""Numeric precision of a run: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

The paper trains with mixed precision (appendix C, "Acceleration methods"). Defaults: fp16 with a gradient scaler
on CUDA, fp32 on CPU (where bf16 autocast is the mixed-precision choice: same exponent range as fp32, so no
scaler is needed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["Precision", "resolve_amp"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str | None, device: torch.device) -> str:
    """``amp`` itself, or for ``None`` the default of ``device``: ``"fp16"`` on CUDA, ``"fp32"`` elsewhere."""
    if amp is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if amp not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"amp must be one of fp32, bf16, fp16 (or null for the device's default), got {amp!r}")
    return amp


@dataclass
class Precision:
    """Autocast context and optimizer step for one precision; the scaler is active for fp16 only."""

    name: str
    device_type: str
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, name: str, device: torch.device) -> Precision:
        return cls(name, device.type, torch.amp.GradScaler(device.type, enabled=name == "fp16"))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, of the scaled loss for fp16."""
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, through the scaler for fp16 (which skips a step with inf / NaN gradients)."""
        if self.scaler.is_enabled():
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """:meth:`backward` then :meth:`step`."""
        self.backward(loss)
        self.step(optimizer)
