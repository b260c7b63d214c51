"""Errors that stop a training run with a message naming the file or the step."""

from __future__ import annotations

__all__ = ["CheckpointError", "CheckpointWriteError", "NonFiniteError", "NonFiniteLossError", "TrainingError"]


class TrainingError(RuntimeError):
    """A run cannot continue; the message says why and what to do."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, truncated, corrupted or not a tdbn checkpoint; the message names the file."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


class NonFiniteError(TrainingError):
    """A NaN or infinite value appeared; ``epoch`` and ``iteration`` (both from 1) name the step, ``what`` where.

    ``what`` is ``"input"``, ``"loss"``, ``"gradient of <parameter>"`` or ``"statistics of <layer>"``; nothing of
    that step was applied to the parameters or the normalization statistics.
    """

    def __init__(self, *, epoch: int, iteration: int, what: str, value: float | None = None,
                 detail: str = "") -> None:
        self.epoch = epoch
        self.iteration = iteration
        self.what = what
        self.value = value
        shown = f" ({value})" if value is not None else ""
        super().__init__(f"non-finite {what}{shown} at epoch {epoch}, iteration {iteration}{detail}")


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN or infinite (a :class:`NonFiniteError` with ``what="loss"``)."""

    def __init__(self, *, epoch: int, iteration: int, value: float, detail: str = "") -> None:
        super().__init__(epoch=epoch, iteration=iteration, what="loss", value=value, detail=detail)
