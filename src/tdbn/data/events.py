"""Event streams and their conversion to frames (paper Sec. "Experiments", appendix C; docs/method.md section 6).

An event camera emits a stream of events ``(t, x, y, p)``: timestamp in microseconds, pixel column ``x``, pixel
row ``y`` (row 0 at the top) and polarity ``p`` (1 = ON, brightness up; 0 = OFF). The networks take frames
``[T, 2, H, W]``: frame ``k`` counts the events of each polarity that fell in its time bin, polarity as channel
(channel 0 = OFF, channel 1 = ON). A loader stacks samples time-first, ``[T, N, 2, H, W]``.

:func:`to_frames` is the one conversion used by every event data set. It is pure and vectorized (one
``bincount`` over all events, no Python loop over events) and conserves events: the sum of the count frames is
exactly the number of events inside the converted time range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["Events", "to_frames", "collate_time_first"]


class Events(NamedTuple):
    """A decoded event stream: four equally long 1-d arrays, in recording order.

    ``t``: int64 microseconds; ``x``: column; ``y``: row, 0 at the top; ``p``: uint8, 1 = ON, 0 = OFF.
    ``to_frames(*events, ...)`` unpacks it.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    @property
    def num_events(self) -> int:
        return int(self.t.shape[0])

    def select(self, mask: np.ndarray) -> Events:
        """The events where ``mask`` (boolean, or integer indices) selects them."""
        return Events(self.t[mask], self.x[mask], self.y[mask], self.p[mask])

    def between(self, start_us: int, end_us: int) -> Events:
        """The events with ``start_us <= t < end_us``."""
        return self.select((self.t >= start_us) & (self.t < end_us))


def _as_int64(a: ArrayLike) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"event arrays must be 1-d, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def check_frame_settings(*, mode: str, split_by: str, window_ms: float | None, n_frames: int | None) -> None:
    """Raise ``ValueError`` naming the valid values for frame settings that :func:`to_frames` (and the streaming
    binner, which must build the same frames) cannot use."""
    if mode not in ("count", "binary"):
        raise ValueError(f"mode must be 'count' or 'binary', got {mode!r}")
    if split_by not in ("time", "events"):
        raise ValueError(f"split_by must be 'time' or 'events', got {split_by!r}")
    if window_ms is None and n_frames is None:
        raise ValueError("give window_ms (fixed windows) and/or n_frames (slices of the whole recording)")
    if n_frames is not None and n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")


def to_frames(
    t: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    p: ArrayLike,
    *,
    sensor_size: tuple[int, int],
    n_frames: int | None = None,
    window_ms: float | None = None,
    start_us: int | None = None,
    downsample_to: tuple[int, int] | None = None,
    mode: Literal["count", "binary"] = "count",
    split_by: Literal["time", "events"] = "time",
) -> torch.Tensor:
    """Bin an event stream into frames ``[T, 2, H, W]`` (float32; channel 0 = OFF, 1 = ON).

    Two ways to cut time, chosen by which argument is given:

    - ``window_ms`` (fixed windows): frame ``k`` holds the events with
      ``start + k*window <= t < start + (k+1)*window``, ``k < n_frames``; events outside are dropped. The paper's
      settings: DVS128 Gesture ``window_ms=30, n_frames=40`` from the gesture's start (the first 1200 ms);
      CIFAR10-DVS ``window_ms=5, n_frames=10`` (the first 50 ms). Without ``n_frames``, as many windows as
      cover the stream up to its last event.
    - ``n_frames`` alone (the whole recording in T slices, what many CIFAR10-DVS re-implementations do):
      ``split_by="time"`` cuts ``[start, t_last]`` into ``n_frames`` slices of equal duration;
      ``split_by="events"`` into slices of (as near as possible) equal event counts, in recording order.

    ``start_us`` defaults to the first (smallest) timestamp; events before it are dropped. ``downsample_to=(Ho, Wo)``
    sums input pixels into output pixels, output column ``x * Wo // W`` and row ``y * Ho // H``: each output pixel
    sums a block of whole input pixels (4x4 for 128 -> 32; 3 or 4 wide for 128 -> 42), so no event is lost or
    split. ``mode="count"`` keeps the counts; ``mode="binary"`` sets a pixel to 1 if it had any event.

    ``sensor_size`` is ``(height, width)``; coordinates outside it raise ``ValueError``.

    >>> t = np.array([0, 10, 20, 30_000]); x = np.array([0, 1, 2, 3])
    >>> y = np.array([0, 0, 1, 1]); p = np.array([1, 0, 1, 1])
    >>> f = to_frames(t, x, y, p, sensor_size=(4, 4), window_ms=10.0, n_frames=4)
    >>> tuple(f.shape), float(f.sum()), float(f[3, 1, 1, 3])
    ((4, 2, 4, 4), 4.0, 1.0)
    >>> tuple(to_frames(t, x, y, p, sensor_size=(4, 4), n_frames=2, downsample_to=(2, 2)).shape)
    (2, 2, 2, 2)
    """
    check_frame_settings(mode=mode, split_by=split_by, window_ms=window_ms, n_frames=n_frames)
    if window_ms is not None and split_by != "time":
        raise ValueError("split_by='events' applies only to slicing the whole recording (window_ms=None)")
    height, width = (int(s) for s in sensor_size)
    out_h, out_w = (height, width) if downsample_to is None else (int(s) for s in downsample_to)
    if not (0 < out_h <= height and 0 < out_w <= width):
        raise ValueError(f"downsample_to={downsample_to} must lie within sensor_size={sensor_size}")

    t, x, y, p = (_as_int64(a) for a in (t, x, y, p))
    n = t.shape[0]
    if not (x.shape[0] == y.shape[0] == p.shape[0] == n):
        raise ValueError(f"event arrays differ in length: t {n}, x {x.shape[0]}, y {y.shape[0]}, p {p.shape[0]}")
    if n:
        if x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height:
            raise ValueError(
                f"event coordinates x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}] "
                f"outside sensor_size (H, W) = {sensor_size}"
            )
        if p.min() < 0 or p.max() > 1:
            raise ValueError("polarity must be 0 (OFF) or 1 (ON)")
    start = int(start_us) if start_us is not None else (int(t.min()) if n else 0)

    if window_ms is not None:
        window_us = int(round(window_ms * 1000.0))
        if window_us < 1:
            raise ValueError(f"window_ms={window_ms} is shorter than the 1 us timestamp resolution")
        if n_frames is None:
            if n == 0:
                raise ValueError("an empty event stream needs n_frames to know how many frames to return")
            n_frames = max(1, math.ceil((int(t.max()) - start + 1) / window_us))
        frame = np.floor_divide(t - start, window_us)
    elif split_by == "time":
        frame = t - start
        last = int(frame.max()) if n else 0
        # [start, t_last] is last + 1 microseconds long; slice k is [k*D/T, (k+1)*D/T); integer maths, exact.
        if last >= 0:
            frame *= n_frames
            frame //= last + 1
    else:
        keep = t >= start
        frame = np.full(n, -1, dtype=np.int64)
        m = int(keep.sum())
        frame[keep] = (np.arange(m, dtype=np.int64) * n_frames) // max(m, 1)
    assert n_frames is not None

    # One flat bin per (frame, polarity, output pixel); events outside the time range go to an extra bin that is
    # cut off, which is cheaper than compacting the four arrays.
    plane = out_h * out_w
    total = n_frames * 2 * plane
    if (out_h, out_w) == (height, width):
        pixel = y * width + x
    else:  # each input pixel -> the output pixel that sums it, by a lookup table of H*W entries
        lut = ((np.arange(height) * out_h) // height)[:, None] * out_w + (np.arange(width) * out_w) // width
        pixel = lut.ravel()[y * width + x]
    index = frame  # owned by this call: computed in place
    outside = (frame < 0) | (frame >= n_frames)
    index *= 2
    index += p
    index *= plane
    index += pixel
    np.putmask(index, outside, total)
    counts = np.bincount(index, minlength=total + 1)[:total]
    if mode == "binary":
        np.minimum(counts, 1, out=counts)
    return torch.from_numpy(counts.astype(np.float32)).view(n_frames, 2, out_h, out_w)


def collate_time_first(batch: Sequence[tuple[torch.Tensor, int | torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(frames [T, ...], label)`` samples into ``([T, N, ...], labels [N])``, the time-first layout.

    >>> xs, ys = collate_time_first([(torch.zeros(10, 2, 4, 4), 3), (torch.ones(10, 2, 4, 4), 5)])
    >>> tuple(xs.shape), ys.tolist(), float(xs[:, 1].mean())
    ((10, 2, 2, 4, 4), [3, 5], 1.0)
    """
    frames = torch.stack([sample[0] for sample in batch])  # [N, T, ...]
    labels = torch.as_tensor([int(sample[1]) for sample in batch], dtype=torch.int64)
    return frames.transpose(0, 1).contiguous(), labels  # [T, N, ...]
