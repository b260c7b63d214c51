"""Errors that stop a training run with a message naming the file or the step."""

from __future__ import annotations

__all__ = ["CheckpointError", "NonFiniteLossError", "TrainingError"]


class TrainingError(RuntimeError):
    """A run cannot continue; the message says why and what to do."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, truncated, corrupted or not a tdbn checkpoint; the message names the file."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; ``epoch`` and ``iteration`` (both from 1) name the step."""

    def __init__(self, *, epoch: int, iteration: int, value: float, detail: str = "") -> None:
        self.epoch = epoch
        self.iteration = iteration
        self.value = value
        super().__init__(f"loss is {value} at epoch {epoch}, iteration {iteration}{detail}")
