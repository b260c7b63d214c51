"""What autograd stores for the backward pass, as the storage tests read it."""

from __future__ import annotations

import torch


class SavedBytes:
    """Every tensor autograd saves inside the block, seen through saved_tensors_hooks (as activation
    checkpointing and CPU offloading see them)."""

    def __init__(self):
        self.saved: list[torch.Tensor] = []

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(lambda t: self.saved.append(t) or t, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    def big(self, numel: int) -> list[torch.Tensor]:
        return [t for t in self.saved if t.numel() >= numel]
