"""DVS128 Gesture (Amir et al. 2017): 11 hand and arm gestures, 29 subjects, 3 lighting conditions, 128x128.

The official release (``DvsGesture.tar.gz``) unpacks to one folder holding, per trial, ``userXX_<lighting>.aedat``
(AEDAT 3.1) and ``userXX_<lighting>_labels.csv`` (``class,startTime_usec,endTime_usec``; classes 1..11), plus
``trials_to_train.txt`` and ``trials_to_test.txt`` (one ``.aedat`` name per line; users 1-23 train, 24-29 test).
Each labelled gesture is one sample, labels 0..10 (class 11, "other gestures", included as in the paper).

Paper setting (appendix C, docs/method.md section 6): 128x128 summed down to 32x32, one frame every 30 ms, T = 40 frames
from the gesture's start, i.e. its first 1200 ms; events after the gesture's end are not used. (The paper quotes
1342 / 288 recordings; one sample per labelled gesture of the official files gives 1176 train and 288 test, the
counts SpikingJelly and snnTorch report; 1342 is the total the data set's own paper gives.)

The AEDAT 3.1 layout is described, and read, in :mod:`tdbn.data.aedat`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tdbn.data.aedat import read_aedat31
from tdbn.data.errors import DataFormatError, DataNotFoundError
from tdbn.data.event_dataset import EventFrameDataset, EventSample, FrameSettings
from tdbn.data.events import Events

__all__ = ["GESTURE_CLASSES", "read_gesture_labels", "DVSGesture"]

GESTURE_CLASSES = [
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
]

_LAYOUT = """\
  <root>/trials_to_train.txt, <root>/trials_to_test.txt
  <root>/userXX_<lighting>.aedat          (AEDAT 3.1)
  <root>/userXX_<lighting>_labels.csv     (class,startTime_usec,endTime_usec)
  (<root> may also be the folder that contains DvsGesture/)"""
_SOURCE = "https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz; unpack it into <root>)"


def read_gesture_labels(path: str | Path) -> list[tuple[int, int, int]]:
    """``(class 1..11, start_us, end_us)`` rows of a ``*_labels.csv`` file (header ``class,startTime_usec,...``)."""
    path = Path(path)
    rows = []
    offset = 0
    for line in path.read_bytes().splitlines(keepends=True):
        text = line.decode("utf-8", errors="replace").strip()
        if text and not text[0].isalpha():  # skip the header line and blank lines
            parts = [s.strip() for s in text.split(",")]
            try:
                cls, start, end = (int(s) for s in parts)
            except ValueError:
                raise DataFormatError(path, offset, f"expected 'class,start_us,end_us', got {text!r}") from None
            if not 1 <= cls <= len(GESTURE_CLASSES) or end <= start:
                raise DataFormatError(path, offset, f"bad label row {text!r}: class must be 1..11, start < end")
            rows.append((cls, start, end))
        offset += len(line)
    return rows


def _find_root(root: Path) -> Path:
    for candidate in (root, root / "DvsGesture"):
        if (candidate / "trials_to_train.txt").is_file() and (candidate / "trials_to_test.txt").is_file():
            return candidate
    raise DataNotFoundError(root, expected=_LAYOUT, source=_SOURCE)


class DVSGesture(EventFrameDataset):
    """DVS128 Gesture gestures as ``(frames [T, 2, H, W], class 0..10)``; defaults are the paper's setting.

    Paper: ``size=(32, 32)``, ``window_ms=30``, ``n_frames=40`` from each gesture's start. Converted frames are
    cached under ``cache_dir`` (recommended: decoding an AEDAT file takes longer than a training step).
    """

    name = "dvs_gesture"
    sensor_size = (128, 128)

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        n_frames: int | None = 40,
        window_ms: float | None = 30.0,
        size: tuple[int, int] | None = (32, 32),
        mode: Literal["count", "binary"] = "count",
        cache_dir: str | Path | None = None,
    ) -> None:
        folder = _find_root(Path(root))
        trials = folder / ("trials_to_train.txt" if train else "trials_to_test.txt")
        samples = []
        for name in trials.read_text().split():
            aedat = folder / name
            labels = aedat.with_name(aedat.stem + "_labels.csv")
            if not aedat.is_file() or not labels.is_file():
                missing = aedat if not aedat.is_file() else labels
                raise DataNotFoundError(missing, expected=_LAYOUT, source=f"listed in {trials}; {_SOURCE}")
            samples += [EventSample(aedat, cls - 1, start, end) for cls, start, end in read_gesture_labels(labels)]
        super().__init__(
            folder,
            samples,
            frames=FrameSettings(n_frames, window_ms, size, mode, "time"),
            classes=list(GESTURE_CLASSES),
            cache_dir=cache_dir,
        )

    def read_file(self, path: Path) -> Events:
        return read_aedat31(path, sensor_size=self.sensor_size)
