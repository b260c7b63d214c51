"""Events in, frames out as their time bins close: :func:`tdbn.data.to_frames` computed on the fly.

:class:`FrameBinner` receives an event stream in chunks (recording order, as a camera delivers packets) and
returns each frame ``[2, H, W]`` as soon as it is complete, with the same binning as ``to_frames`` (same time
bins, same pixel lookup for downsampling, same count/binary mode), so frame ``t`` of a stream equals
``to_frames(...)[t]`` of the whole recording (tests/stream).

Which bins are causal: fixed windows (``window_ms``, the DVS128 Gesture and CIFAR10-DVS settings) close when time
passes their end, so a live camera can be binned. Slicing a whole recording into ``n_frames`` parts
(``window_ms=None``, the N-MNIST default) needs the recording's duration (``split_by="time"``) or its number of
events (``split_by="events"``) before the first bin closes: known for a replayed file, not for a live source.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..data.aedat import read_aedat2, read_aedat31
from ..data.events import Events, check_frame_settings
from ..data.nmnist import read_bin_events

__all__ = ["FrameBinner", "read_events"]


class FrameBinner:
    """Bin events into frames ``[2, H, W]`` (float32; channel 0 = OFF, 1 = ON) as they arrive.

    Args mirror :func:`tdbn.data.to_frames`: ``sensor_size`` (H, W), ``window_ms`` and/or ``n_frames``,
    ``start_us`` (the time origin; events before it are dropped), ``downsample_to``, ``mode``, ``split_by``.
    Slicing a whole recording (``window_ms=None``) also needs ``last_us`` (its last timestamp, for
    ``split_by="time"``) or ``num_events`` (events at or after ``start_us``, for ``split_by="events"``).

    ``push(t, x, y, p)`` returns the frames completed by these events, in order; ``finish()`` the remaining ones
    (up to ``n_frames``, or through the last event's window). An event that arrives after its frame was returned
    (out of time order) is counted in :attr:`late` and dropped.

    Example:
        >>> b = FrameBinner(sensor_size=(4, 4), window_ms=10.0, start_us=0)
        >>> [tuple(f.shape) for f in b.push([0, 5], [1, 2], [0, 0], [1, 1])]   # window 0 still open
        []
        >>> [float(f.sum()) for f in b.push([25_000], [3], [3], [0])]        # closes windows 0 and 1
        [2.0, 0.0]
        >>> [float(f.sum()) for f in b.finish()]
        [1.0]
    """

    def __init__(
        self,
        *,
        sensor_size: tuple[int, int],
        start_us: int,
        window_ms: float | None = None,
        n_frames: int | None = None,
        downsample_to: tuple[int, int] | None = None,
        mode: Literal["count", "binary"] = "count",
        split_by: Literal["time", "events"] = "time",
        last_us: int | None = None,
        num_events: int | None = None,
    ):
        check_frame_settings(mode=mode, split_by=split_by, window_ms=window_ms, n_frames=n_frames)
        self.height, self.width = (int(s) for s in sensor_size)
        self.out_h, self.out_w = (self.height, self.width) if downsample_to is None else (int(s) for s in downsample_to)
        if not (0 < self.out_h <= self.height and 0 < self.out_w <= self.width):
            raise ValueError(f"downsample_to={downsample_to} must lie within sensor_size={sensor_size}")
        self.start = int(start_us)
        self.n_frames = n_frames
        self.mode = mode
        self.window_us: int | None = None
        self.split_by = split_by
        if window_ms is not None:
            if split_by != "time":
                raise ValueError("split_by='events' applies only to slicing the whole recording (window_ms=None)")
            self.window_us = int(round(window_ms * 1000.0))
            if self.window_us < 1:
                raise ValueError(f"window_ms={window_ms} is shorter than the 1 us timestamp resolution")
        elif split_by == "time":
            if last_us is None:
                raise ValueError("slicing a whole recording by time needs last_us, the recording's last timestamp "
                                 "(a live source needs fixed windows, window_ms)")
            self.span = int(last_us) - self.start + 1  # to_frames: last + 1 microseconds
        else:
            if num_events is None:
                raise ValueError("slicing a whole recording by event counts needs num_events")
            self.total_events = int(num_events)
        self.seen = 0  # events at or after start, so far (split_by="events")
        self.late = 0
        self.plane = self.out_h * self.out_w
        if (self.out_h, self.out_w) != (self.height, self.width):
            self.lut = (((np.arange(self.height) * self.out_h) // self.height)[:, None] * self.out_w
                        + (np.arange(self.width) * self.out_w) // self.width).ravel()
        else:
            self.lut = None
        self.next = 0  # index of the first frame not returned yet
        self.pending = np.zeros(2 * self.plane, dtype=np.int64)  # counts of frame `next`
        self.last_frame = -1  # highest frame index an event fell into (for finish() without n_frames)

    @property
    def window_length_us(self) -> float | None:
        """Duration of one frame in microseconds (``None`` when bins hold equal event counts)."""
        if self.window_us is not None:
            return float(self.window_us)
        if self.split_by == "time" and self.n_frames is not None:
            return self.span / self.n_frames
        return None

    def _frame_index(self, t: np.ndarray) -> np.ndarray:
        rel = t - self.start
        if self.window_us is not None:
            return np.floor_divide(rel, self.window_us)
        assert self.n_frames is not None
        if self.split_by == "time":
            return (rel * self.n_frames) // self.span
        keep = rel >= 0
        idx = np.full(t.shape[0], -1, dtype=np.int64)
        m = int(keep.sum())
        order = self.seen + np.arange(m, dtype=np.int64)
        idx[keep] = (order * self.n_frames) // max(self.total_events, 1)
        self.seen += m
        return idx

    def _emit(self, upto: int) -> list[torch.Tensor]:
        """Return frames ``next .. upto - 1``; the pending counts belong to frame ``next``."""
        frames = []
        while self.next < upto:
            counts = self.pending
            if self.mode == "binary":
                counts = np.minimum(counts, 1)
            frames.append(torch.from_numpy(counts.astype(np.float32)).view(2, self.out_h, self.out_w))
            self.pending = np.zeros(2 * self.plane, dtype=np.int64)
            self.next += 1
        return frames

    def push(self, t: ArrayLike, x: ArrayLike, y: ArrayLike, p: ArrayLike) -> list[torch.Tensor]:
        """Add events (1-d arrays, recording order); returns the frames that they complete."""
        t, x, y, p = (np.asarray(a).astype(np.int64, copy=False) for a in (t, x, y, p))
        if not (t.ndim == x.ndim == y.ndim == p.ndim == 1 and t.shape == x.shape == y.shape == p.shape):
            raise ValueError("event arrays must be 1-d and equally long")
        if t.shape[0] == 0:
            return []
        if x.min() < 0 or x.max() >= self.width or y.min() < 0 or y.max() >= self.height:
            raise ValueError(f"event coordinates outside sensor_size (H, W) = ({self.height}, {self.width})")
        if p.min() < 0 or p.max() > 1:
            raise ValueError("polarity must be 0 (OFF) or 1 (ON)")
        idx = self._frame_index(t)
        limit = self.n_frames if self.n_frames is not None else np.iinfo(np.int64).max
        inside = (idx >= 0) & (idx < limit)
        late = inside & (idx < self.next)
        self.late += int(late.sum())
        ok = inside & ~late
        beyond = self.n_frames is not None and bool((idx >= limit).any())  # time passed the last frame's end
        if not ok.any():
            return self._emit(limit) if beyond else []
        idx, pixel, pol = idx[ok], y[ok] * self.width + x[ok], p[ok]
        if self.lut is not None:
            pixel = self.lut[pixel]
        hi = int(idx.max())
        self.last_frame = max(self.last_frame, hi)
        span = hi - self.next + 1
        counts = np.bincount(((idx - self.next) * 2 + pol) * self.plane + pixel, minlength=span * 2 * self.plane)
        counts = counts.reshape(span, 2 * self.plane)
        self.pending += counts[0]
        frames = []
        for k in range(1, span):  # an event of frame hi arrived: the frames before it are complete
            frames += self._emit(self.next + 1)
            self.pending += counts[k]
        return frames + self._emit(limit if beyond else hi)

    def advance_to(self, now_us: int) -> list[torch.Tensor]:
        """Fixed windows only: return the frames whose window ended at or before ``now_us`` (time passing without
        events, on a live source)."""
        if self.window_us is None:
            raise ValueError("advance_to needs fixed windows (window_ms)")
        upto = (int(now_us) - self.start) // self.window_us
        if self.n_frames is not None:
            upto = min(upto, self.n_frames)
        return self._emit(max(upto, self.next))

    def finish(self) -> list[torch.Tensor]:
        """The end of the stream: the remaining frames, through ``n_frames`` (or the last event's window)."""
        if self.n_frames is not None:
            return self._emit(self.n_frames)
        if self.last_frame < 0:
            raise ValueError("an empty event stream needs n_frames to know how many frames to return")
        return self._emit(self.last_frame + 1)


def read_events(
    path: str | Path, *, sensor_size: tuple[int, int] | None = None, orientation: Literal["upright", "jaer"] = "upright"
) -> Events:
    """Read an event file by its format: N-MNIST binary (``.bin``/``.bs2``; ``sensor_size`` default 34x34),
    AEDAT 3.1 (DVS128 Gesture) or AEDAT 2.0 (CIFAR10-DVS; ``orientation`` as in :func:`tdbn.data.read_aedat2`),
    told apart by their first line, or the project's own event arrays: an ``.npz`` with 1-d arrays ``t`` (us),
    ``x``, ``y``, ``p`` (:class:`tdbn.data.Events` fields)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".bin", ".bs2"):
        return read_bin_events(path, sensor_size=sensor_size or (34, 34))
    if suffix == ".npz":
        with np.load(path) as data:
            missing = [k for k in ("t", "x", "y", "p") if k not in data]
            if missing:
                raise ValueError(f"{path}: an event .npz needs arrays t, x, y, p; missing {missing}")
            return Events(*(np.asarray(data[k]) for k in ("t", "x", "y", "p")))
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"#!AER-DAT3"):
        return read_aedat31(path, sensor_size=sensor_size or (128, 128))
    if head.startswith(b"#!AER-DAT2"):
        return read_aedat2(path, orientation=orientation)
    raise ValueError(
        f"{path}: unknown event file format; expected N-MNIST binary (.bin, .bs2), AEDAT 3.1 or 2.0 (a '#!AER-DAT' "
        "header) or an .npz with arrays t, x, y, p"
    )


def chunks(events: Events, chunk_us: int) -> list[Events]:
    """Split a recording into consecutive chunks of ``chunk_us`` microseconds of recording time (recording order
    kept), as a camera delivers packets; timestamps out of order split by position instead."""
    n = events.num_events
    if n == 0:
        return []
    t = events.t.astype(np.int64, copy=False)
    if np.all(t[1:] >= t[:-1]):
        edges = np.arange(int(t[0]) + chunk_us, int(t[-1]) + chunk_us + 1, chunk_us)
        cuts = np.searchsorted(t, edges, side="left")
    else:
        per = max(1, math.ceil(n / max(1, (int(t.max()) - int(t.min())) // chunk_us + 1)))
        cuts = np.arange(per, n + per, per)
    out, lo = [], 0
    for hi in cuts:
        hi = int(min(hi, n))
        if hi > lo:
            out.append(Events(events.t[lo:hi], events.x[lo:hi], events.y[lo:hi], events.p[lo:hi]))
            lo = hi
    return out
