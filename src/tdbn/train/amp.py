"""Numeric precision of a run: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

The paper trains with mixed precision (appendix C, "Acceleration methods"). Defaults: fp16 with a gradient scaler
on CUDA, fp32 on CPU (where bf16 autocast is the mixed-precision choice: same exponent range as fp32, so no
scaler is needed).

bf16 pays on a CPU only where oneDNN computes it natively (AVX512-BF16 or AMX): there it is about twice the fp32
speed. Elsewhere (an AVX2-only CPU, say) PyTorch runs bf16 convolutions on its slow reference path: a ResNet-19
training step measured 14x slower than in fp32 on a 2-core AVX2 machine. ``amp="auto"`` picks bf16 where it is
native and fp32 where it is not; an explicit ``amp="bf16"`` on a CPU without it runs as asked, with one warning
that names the cost and the fix.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["Precision", "cpu_bf16_native", "precision_note", "resolve_amp"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NO_NATIVE_BF16 = ("this CPU has no native bf16 (oneDNN reports neither AVX512-BF16 nor AMX), so bf16 autocast "
                   "runs convolutions on PyTorch's slow reference path (14x slower than fp32 on an AVX2 CPU); "
                   "use amp=auto (bf16 where native, else fp32) or amp=fp32")


def cpu_bf16_native() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX512-BF16 or AMX), where bf16 autocast is fast."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(amp: str | None, device: torch.device) -> str:
    """The precision a run uses: ``amp`` itself; for ``None`` the device's default (``"fp16"`` on CUDA, ``"fp32"``
    elsewhere); for ``"auto"`` the fastest one the device computes natively (on a CPU ``"bf16"`` where
    :func:`cpu_bf16_native`, else ``"fp32"``; on CUDA ``"bf16"`` where supported, else ``"fp16"``)."""
    if amp is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if amp == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_bf16_native() else "fp32"
    if amp not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"amp must be one of fp32, bf16, fp16, auto (or null for the device's default), got {amp!r}")
    return amp


def precision_note(asked: str | None, used: str, device: torch.device) -> tuple[str, str | None]:
    """What a run logs about its precision: ``(line, warning)``; the warning (else ``None``) when bf16 runs on a
    CPU without native bf16, the line says what ``auto`` chose and why."""
    if device.type == "cpu" and used == "bf16" and not cpu_bf16_native():
        return "precision: bf16 (no native bf16 on this CPU: slow, see the warning)", f"amp=bf16: {_NO_NATIVE_BF16}"
    if asked == "auto" and device.type == "cpu":
        why = ("native bf16 on this CPU" if used == "bf16"
               else "no native bf16 on this CPU (neither AVX512-BF16 nor AMX)")
        return f"precision: {used} (amp=auto: {why})", None
    return f"precision: {used}" + (f" (amp={asked})" if asked not in (None, used) else ""), None


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
