"""N-MNIST (Orchard et al. 2015): MNIST digits recorded by an ATIS camera (34x34) in three saccades, ~300 ms.

Not one of the paper's data sets; the classic neuromorphic benchmark, small enough for quick runs.

File format (one file per sample, 5 bytes per event, no header)::

    byte 0: x            byte 1: y            byte 2, bit 7: polarity (1 = ON)
    bytes 2 (bits 6..0), 3, 4: timestamp in microseconds, 23 bits, big-endian

The same format stores the 128x128 DVS clips in ``../shared/data/dvs128-clips`` (:func:`read_bin_events` with
``sensor_size=(128, 128)``).

Two layouts are read:

- the official release: ``Train/<digit>/<id>.bin`` and ``Test/<digit>/<id>.bin``;
- a flat folder: ``<id>.bs2`` (or ``.bin``) files with label lists ``train*.txt`` / ``test*.txt``
  (lines ``id<TAB>label``, ``#`` comments), as in ``../shared/data/nmnist-small``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from tdbn.data.errors import DataFormatError, DataNotFoundError
from tdbn.data.event_dataset import EventFrameDataset, EventSample, FrameSettings
from tdbn.data.events import Events

__all__ = ["read_bin_events", "NMNIST"]

_LAYOUT = """\
  official:  <root>/Train/<digit 0-9>/<id>.bin   and   <root>/Test/<digit 0-9>/<id>.bin
  flat:      <root>/<id>.bs2 (or .bin)  with label lists <root>/train*.txt and <root>/test*.txt ("id<TAB>label")"""
_SOURCE = "https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip; unzip both into <root>)"


def read_bin_events(path: str | Path, *, sensor_size: tuple[int, int] = (34, 34)) -> Events:
    """Read a file in the N-MNIST binary format (5 bytes per event); ``sensor_size`` = (H, W) bounds x and y.

    Raises :class:`DataFormatError` naming the byte offset of a truncated tail or of the first event whose
    address lies outside the sensor.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        whole = raw.size - raw.size % 5
        raise DataFormatError(path, whole, f"truncated event: {raw.size % 5} trailing byte(s), events are 5 bytes")
    b = raw.reshape(-1, 5)
    x = b[:, 0].astype(np.int16)
    y = b[:, 1].astype(np.int16)
    p = (b[:, 2] >> 7).astype(np.uint8)
    t = (
        (b[:, 2].astype(np.int64) & 0x7F) << 16
        | b[:, 3].astype(np.int64) << 8
        | b[:, 4].astype(np.int64)
    )
    height, width = sensor_size
    bad = (x >= width) | (y >= height)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(path, 5 * i, f"event {i} at x={x[i]}, y={y[i]} lies outside the {width}x{height} sensor")
    return Events(t, x, y, p)


def _read_label_list(path: Path) -> list[tuple[str, int]]:
    entries = []
    offset = 0
    for line in path.read_bytes().splitlines(keepends=True):
        text = line.decode("utf-8", errors="replace").strip()
        if text and not text.startswith("#"):
            parts = text.split()
            if len(parts) != 2 or not parts[1].isdigit() or not 0 <= int(parts[1]) <= 9:
                raise DataFormatError(path, offset, f"expected 'id<TAB>label' with label 0-9, got {text!r}")
            entries.append((parts[0], int(parts[1])))
        offset += len(line)
    return entries


def _find_samples(root: Path, train: bool) -> list[EventSample]:
    if not root.is_dir():  # name the root itself, not a split folder under it
        raise DataNotFoundError(root, expected=_LAYOUT, source=_SOURCE)
    split_dir = root / ("Train" if train else "Test")
    if split_dir.is_dir():
        samples = [
            EventSample(path, int(digit_dir.name))
            for digit_dir in sorted(split_dir.iterdir())
            if digit_dir.is_dir() and digit_dir.name.isdigit()
            for path in sorted(digit_dir.glob("*.bin"), key=lambda p: (len(p.stem), p.stem))
        ]
        if samples:
            return samples
    lists = sorted(root.glob(("train" if train else "test") + "*.txt")) if root.is_dir() else []
    if len(lists) == 1:
        samples = []
        for sample_id, label in _read_label_list(lists[0]):
            candidates = [root / f"{sample_id}{ext}" for ext in (".bs2", ".bin")]
            path = next((c for c in candidates if c.exists()), None)
            if path is None:
                raise DataNotFoundError(candidates[0], expected=_LAYOUT, source=f"listed in {lists[0]}; {_SOURCE}")
            samples.append(EventSample(path, label))
        return samples
    raise DataNotFoundError(split_dir if not lists else root, expected=_LAYOUT, source=_SOURCE)


class NMNIST(EventFrameDataset):
    """N-MNIST samples as ``(frames [T, 2, 34, 34], digit)``.

    Defaults: the whole recording (3 saccades, ~300 ms) in ``n_frames=10`` equal time slices, event counts.
    Pass ``window_ms`` for fixed windows from the first event; ``size`` to downsample (H, W).
    """

    name = "nmnist"
    sensor_size = (34, 34)

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        n_frames: int | None = 10,
        window_ms: float | None = None,
        size: tuple[int, int] | None = None,
        mode: Literal["count", "binary"] = "count",
        split_by: Literal["time", "events"] = "time",
        cache_dir: str | Path | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(
            root,
            _find_samples(root, train),
            frames=FrameSettings(n_frames, window_ms, size, mode, split_by),
            classes=[str(d) for d in range(10)],
            cache_dir=cache_dir,
        )

    def read_file(self, path: Path) -> Events:
        return read_bin_events(path, sensor_size=self.sensor_size)
