"""A small runner over the step API, and an event recording replayed as a live stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.events import Events
from .binning import FrameBinner, chunks
from .step import StreamState, init_state, step

Tensor = torch.Tensor

__all__ = ["Stream", "StreamReport", "run_events", "top1"]


def top1(scores: Tensor) -> Tensor:
    """The predicted class of scores ``[..., K]``, chosen as ``tdbn eval`` counts a top-1 hit (the first of the
    top-k indices, k = min(5, K)), so that ties between classes resolve identically."""
    return scores.topk(min(5, scores.shape[-1]), dim=-1).indices[..., 0]


class Stream:
    """A model and the state of ``batch_size`` streams through it: ``push(x_t)`` returns the running scores.

    The state is an attribute (:attr:`state`, a :class:`~tdbn.stream.StreamState`), replaced at every push, never
    hidden in the model. ``window`` (steps) restarts it after that many steps, so that a long stream is seen in
    sequences as long as the training ones (``None``: one sequence, never restarted).

    Example:
        >>> model = tdbn.models.create("resnet19", num_classes=10, width=0.125, timesteps=2).eval()
        >>> stream = Stream(model, window=2)
        >>> x = torch.rand(4, 1, 3, 32, 32)  # [T, N, C, H, W]
        >>> scores = [stream.push(x[t]) for t in range(4)]
        >>> torch.equal(scores[1], model(x[:2])), torch.equal(scores[3], model(x[2:]))
        (True, True)
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 1, window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 step or None, got {window}")
        self.model = model
        self.window = window
        self.state: StreamState = init_state(model, batch_size)

    def reset(self) -> None:
        """Start a new sequence: every neuron back to ``u = 0``, no step taken."""
        self.state = init_state(self.model, self.state.batch_size)

    def push(self, x_t: Tensor) -> Tensor:
        """Feed one time step ``[N, ...]``; returns the scores averaged over the sequence so far ``[N, K]``."""
        if self.window is not None and self.state.steps >= self.window:
            self.reset()
        scores, self.state = step(self.model, x_t, self.state)
        return scores


@dataclass
class StreamReport:
    """What :func:`run_events` measured: one record per step and the totals.

    The first step pays for one-time work (memory allocation, kernel selection, caches: often 100 times a later
    step), so it is reported apart as the warm-up, and the rates describe the steady state after it: per step,
    per event and against the frame duration. A stream of one step has no steady state; its rates are those of
    that step.
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0  # events read from the recording
    late_events: int = 0  # arrived after their frame was closed (out of time order), dropped
    wall_s: float = 0.0  # binning + network, the whole replay
    window_us: float | None = None  # duration of one frame
    warmup_s: float = 0.0  # binning + network until the first step's scores (included in wall_s)
    warmup_events: int = 0  # events read until then

    def _steady(self) -> bool:
        return len(self.steps) > 1

    @property
    def warmup_ms(self) -> float:
        """Wall time of the first step, binning included."""
        return 1000.0 * self.warmup_s if self.steps else float("nan")

    @property
    def model_ms_per_step(self) -> float:
        """Network time per step after the first."""
        steps = self.steps[1:] if self._steady() else self.steps
        return float(np.mean([s["model_ms"] for s in steps])) if steps else float("nan")

    @property
    def ms_per_step(self) -> float:
        """Wall time per step after the first, binning included."""
        if not self.steps:
            return float("nan")
        if not self._steady():
            return 1000.0 * self.wall_s
        return 1000.0 * (self.wall_s - self.warmup_s) / (len(self.steps) - 1)

    @property
    def events_per_s(self) -> float:
        """Events binned and run per second after the first step."""
        wall, events = self.wall_s, self.events
        if self._steady():
            wall, events = wall - self.warmup_s, events - self.warmup_events
        return events / wall if wall > 0 else float("nan")

    @property
    def realtime_factor(self) -> float | None:
        """Frame duration over compute time per step after the first: > 1 keeps up with a live camera."""
        if self.window_us is None or not self.steps:
            return None
        return (self.window_us / 1000.0) / self.ms_per_step

    def summary(self) -> dict[str, Any]:
        return {
            "steps": len(self.steps), "events": self.events, "late_events": self.late_events,
            "wall_s": self.wall_s, "warmup_ms": self.warmup_ms,
            "warmup_model_ms": self.steps[0]["model_ms"] if self.steps else None,
            "events_per_s": self.events_per_s, "ms_per_step": self.ms_per_step,
            "model_ms_per_step": self.model_ms_per_step,
            "window_ms": None if self.window_us is None else self.window_us / 1000.0,
            "realtime_factor": self.realtime_factor,
            "prediction": self.steps[-1]["prediction"] if self.steps else None,
        }


def run_events(
    model: nn.Module,
    events: Events,
    *,
    sensor_size: tuple[int, int],
    n_frames: int | None = None,
    window_ms: float | None = None,
    downsample_to: tuple[int, int] | None = None,
    mode: str = "count",
    split_by: str = "time",
    start_us: int | None = None,
    window: int | None = None,
    chunk_us: int = 1000,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> StreamReport:
    """Replay a recording as a live stream: events in chunks of ``chunk_us`` of recording time, binned on the fly
    (:class:`FrameBinner`, the frame settings of training), one network step per completed frame.

    ``window`` restarts the network state every that many steps (default: never; a recording binned into
    ``n_frames`` frames then gives ``model(to_frames(...))`` as its last scores). Each step record holds
    ``step``, ``end_ms`` (end of its frame, from the stream's start), ``events`` (in the frame), ``prediction``,
    ``score``, ``model_ms``; ``on_step`` is called with it as soon as it exists.
    """
    t = events.t
    start = int(start_us) if start_us is not None else (int(t.min()) if events.num_events else 0)
    binner = FrameBinner(
        sensor_size=sensor_size, start_us=start, window_ms=window_ms, n_frames=n_frames, downsample_to=downsample_to,
        mode=mode, split_by=split_by,  # type: ignore[arg-type]
        last_us=int(t.max()) if events.num_events else start,
        num_events=int((t >= start).sum()),
    )
    stream = Stream(model, batch_size=1, window=window)
    report = StreamReport(events=events.num_events, window_us=binner.window_length_us)
    begin = time.perf_counter()
    read = 0  # events pushed into the binner so far

    def run(frames: list[Tensor]) -> None:
        for frame in frames:
            t0 = time.perf_counter()
            scores = stream.push(frame.unsqueeze(0))  # [N=1, 2, H, W]
            t1 = time.perf_counter()
            model_ms = 1000.0 * (t1 - t0)
            k = len(report.steps)
            if k == 0:
                report.warmup_s, report.warmup_events = t1 - begin, read
            end_ms = None if report.window_us is None else (k + 1) * report.window_us / 1000.0
            record = {"step": k + 1, "end_ms": end_ms, "events": int(frame.sum().item()) if mode == "count" else None,
                      "prediction": int(top1(scores[0])), "score": float(scores[0].max()), "model_ms": model_ms}
            report.steps.append(record)
            if on_step is not None:
                on_step(record)

    for chunk in chunks(events, chunk_us):
        read += chunk.num_events
        run(binner.push(*chunk))
    run(binner.finish())
    report.wall_s = time.perf_counter() - begin
    report.late_events = binner.late
    return report
