"""The shared machinery of the event data sets: samples, frame settings, the frame cache, bulk conversion.

A concrete data set (:class:`~tdbn.data.nmnist.NMNIST`, :class:`~tdbn.data.dvs_gesture.DVSGesture`,
:class:`~tdbn.data.cifar10_dvs.CIFAR10DVS`) only finds its samples and reads one file into
:class:`~tdbn.data.events.Events`; everything else lives here, once.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset  # noqa: F401

from tdbn.data.cache import FrameCache
from tdbn.data.errors import DataError
from tdbn.data.events import Events, collate_time_first, to_frames

__all__ = ["EventSample", "FrameSettings", "ConversionReport", "EventFrameDataset"]


@dataclass(frozen=True)
class EventSample:
    """One labelled sample: a file and, for files holding several samples, the time range ``[start_us, end_us)``."""

    path: Path
    label: int
    start_us: int | None = None
    end_us: int | None = None


@dataclass(frozen=True)
class FrameSettings:
    """The arguments of :func:`~tdbn.data.events.to_frames` that a data set applies to every sample."""

    n_frames: int | None
    window_ms: float | None
    size: tuple[int, int] | None  # downsample_to, (H, W); None keeps the sensor size
    mode: Literal["count", "binary"] = "count"
    split_by: Literal["time", "events"] = "time"


@dataclass
class ConversionReport:
    """What :meth:`EventFrameDataset.convert` did: samples converted now, found in the cache, and bad files."""

    converted: int = 0
    cached: int = 0
    bad: dict[Path, str] = field(default_factory=dict)  # file -> error message (names the byte offset)

    @property
    def ok(self) -> bool:
        return not self.bad

    def __str__(self) -> str:
        lines = [f"{self.converted} converted, {self.cached} already cached, {len(self.bad)} bad file(s)"]
        lines += [f"  {msg}" for msg in self.bad.values()]
        return "\n".join(lines)


class EventFrameDataset(Dataset):
    """Event samples as ``(frames [T, 2, H, W] float32, label)``; frames cached on disk when ``cache_dir`` is set.

    Subclasses set :attr:`sensor_size` and :attr:`name` and implement :meth:`read_file`.
    """

    name: str = "events"
    sensor_size: tuple[int, int] = (128, 128)  # (H, W) of the camera

    def __init__(
        self,
        root: str | Path,
        samples: list[EventSample],
        *,
        frames: FrameSettings,
        classes: list[str],
        cache_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.samples = samples
        self.frames = frames
        self.classes = classes
        self.cache = FrameCache(cache_dir) if cache_dir is not None else None
        self._memo: tuple[Path, Events] | None = None  # the last file read: samples of one file are adjacent

    # --- what a subclass provides -------------------------------------------------------------------------
    def read_file(self, path: Path) -> Events:
        """All events of one file; raises :class:`~tdbn.data.errors.DataFormatError` if it is corrupt."""
        raise NotImplementedError

    def reader_params(self) -> dict[str, Any]:
        """Reader options that change the decoded events (part of the cache key)."""
        return {}

    # --- Dataset -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        key = self._key(sample) if self.cache is not None else None
        if key is not None and self.cache is not None:
            cached = self.cache.load(key)
            if cached is not None:
                return cached, sample.label
        frames = self._convert(sample, self._events_of_file(sample.path))
        if key is not None and self.cache is not None:
            self.cache.save(key, frames)
        return frames, sample.label

    def events(self, index: int) -> Events:
        """The raw events of sample ``index`` (for a multi-sample file, only those in its time range)."""
        sample = self.samples[index]
        return self._slice(sample, self._events_of_file(sample.path))

    # --- conversion --------------------------------------------------------------------------------------
    def _events_of_file(self, path: Path) -> Events:
        if self._memo is None or self._memo[0] != path:
            self._memo = (path, self.read_file(path))
        return self._memo[1]

    @staticmethod
    def _slice(sample: EventSample, events: Events) -> Events:
        if sample.start_us is None and sample.end_us is None:
            return events
        start = sample.start_us if sample.start_us is not None else -(2**62)
        end = sample.end_us if sample.end_us is not None else 2**62
        return events.between(start, end)

    def _convert(self, sample: EventSample, events: Events) -> torch.Tensor:
        f = self.frames
        return to_frames(
            *self._slice(sample, events),
            sensor_size=self.sensor_size,
            n_frames=f.n_frames,
            window_ms=f.window_ms,
            start_us=sample.start_us,
            downsample_to=f.size,
            mode=f.mode,
            split_by=f.split_by,
        )

    def _key(self, sample: EventSample) -> str:
        st = os.stat(sample.path)
        try:
            rel = sample.path.relative_to(self.root).as_posix()
        except ValueError:
            rel = sample.path.as_posix()
        return FrameCache.key(
            {
                "dataset": self.name,
                "file": rel,
                "file_size": st.st_size,
                "file_mtime_ns": st.st_mtime_ns,
                "start_us": sample.start_us,
                "end_us": sample.end_us,
                "sensor_size": list(self.sensor_size),
                "reader": self.reader_params(),
                "frames": asdict(self.frames),
            }
        )

    def _convert_file(self, path: Path, samples: list[EventSample]) -> tuple[int, int, str | None]:
        """Convert and cache every sample of one file: (converted, cached, error message or None)."""
        assert self.cache is not None
        keys = [self._key(s) for s in samples]
        todo = [(s, k) for s, k in zip(samples, keys) if not self.cache.path(k).exists()]
        if not todo:
            return 0, len(samples), None
        try:
            events = self.read_file(path)
            frames = [(self._convert(s, events), k) for s, k in todo]
        except DataError as err:
            return 0, 0, str(err)  # nothing of a bad file is cached
        for f, k in frames:
            self.cache.save(k, f)
        return len(todo), len(samples) - len(todo), None

    def convert(self, *, workers: int = 0) -> ConversionReport:
        """Convert every sample into the cache; report bad files instead of stopping at the first one.

        Each file is read once (DVS128 Gesture files hold several gestures). ``workers > 0`` converts files in
        that many threads (decoding and binning run in numpy, mostly outside the GIL). Bad files are never
        cached; :meth:`exclude` drops them from the data set.
        """
        if self.cache is None:
            raise ValueError("convert() needs a cache: construct the data set with cache_dir=...")
        groups = [(path, list(group)) for path, group in groupby(self.samples, key=lambda s: s.path)]
        report = ConversionReport()
        if workers > 0:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda g: self._convert_file(*g), groups))
        else:
            results = [self._convert_file(path, group) for path, group in groups]
        for (path, _), (converted, cached, error) in zip(groups, results):
            report.converted += converted
            report.cached += cached
            if error is not None:
                report.bad[path] = error
        return report

    def exclude(self, paths: Iterable[str | Path]) -> EventFrameDataset:
        """A copy of this data set without the samples of the given files (e.g. ``report.bad``)."""
        drop = {Path(p) for p in paths}
        other = copy.copy(self)
        other.samples = [s for s in self.samples if s.path not in drop]
        other._memo = None
        return other

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(len(self)):
            yield self[i]
