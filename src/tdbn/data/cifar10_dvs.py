"""CIFAR10-DVS (Li et al. 2017): 10,000 CIFAR-10 images shown on a monitor and recorded by a DVS128, 1,000 per class.

Official release (figshare, one zip per class) unpacked into ``<root>/<class>/cifar10_<class>_<index>.aedat``,
index 0..999. The files are jAER AEDAT 2.0 from a DVS128, read by :func:`tdbn.data.aedat.read_aedat2`, whose
docstring gives the layout, the DVS128 address bits and the two orientation conventions; the default here,
``orientation="upright"`` (``column = 127 - y_raw``, ``row = 127 - x_raw``, ON = raw polarity bit 0), is the
convention of SpikingJelly's CIFAR10-DVS loader, in which the objects appear upright.

Paper setting (appendix C, docs/method.md section 6): 128x128 summed down to 42x42, events accumulated in 5 ms frames,
T = 10. Those ten frames cover only the first 50 ms of a ~1.3 s recording; many re-implementations instead cut
the whole recording into T equal slices (``window_ms=None``). The default follows the paper's text.

The data set has no official split, and evaluating without a held-out split is a known pitfall. A fixed,
stratified 9,000 / 1,000 split (900 / 100 per class) is stored with the code in
``splits/cifar10_dvs_split.json``; it is regenerated exactly by :func:`make_split` (documented there).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from tdbn.data.aedat import read_aedat2
from tdbn.data.errors import DataNotFoundError
from tdbn.data.event_dataset import EventFrameDataset, EventSample, FrameSettings
from tdbn.data.events import Events

__all__ = ["CIFAR10_DVS_CLASSES", "SPLIT_SEED", "make_split", "load_split", "CIFAR10DVS"]

CIFAR10_DVS_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLIT_SEED = 2021  # the seed of the stored split (the paper's year)
_LAYOUT = "  <root>/<class>/cifar10_<class>_<index>.aedat   for class in " + ", ".join(CIFAR10_DVS_CLASSES)
_SOURCE = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (one zip per class; unzip into <root>)"
_INDEX = re.compile(r"(\d+)\.aedat$")


def make_split(*, seed: int = SPLIT_SEED, n_per_class: int = 1000, n_test: int = 100) -> dict[str, Any]:
    """The stratified split: for each class, the ``n_test`` indices with the smallest SHA-256 of
    ``f"{seed}:{class}:{index}"`` are test, the rest train (lists sorted).

    A hash order, unlike a library RNG, cannot change with a numpy or Python version.

    >>> split = make_split()
    >>> len(split["train"]["cat"]), len(split["test"]["cat"]), split["test"]["cat"][:3]
    (900, 100, [4, 26, 32])
    """
    def rank(cls: str, index: int) -> bytes:
        return hashlib.sha256(f"{seed}:{cls}:{index}".encode()).digest()

    train, test = {}, {}
    for cls in CIFAR10_DVS_CLASSES:
        order = sorted(range(n_per_class), key=lambda i: rank(cls, i))
        test[cls] = sorted(order[:n_test])
        train[cls] = sorted(order[n_test:])
    return {
        "description": "CIFAR10-DVS stratified train/test split (the data set has no official one)",
        "procedure": "per class, the n_test indices with the smallest sha256(f'{seed}:{class}:{index}') are test",
        "seed": seed,
        "n_per_class": n_per_class,
        "n_test": n_test,
        "classes": list(CIFAR10_DVS_CLASSES),
        "train": train,
        "test": test,
    }


def load_split() -> dict[str, Any]:
    """The split stored with the package (``tdbn/data/splits/cifar10_dvs_split.json``)."""
    text = resources.files("tdbn.data").joinpath("splits/cifar10_dvs_split.json").read_text()
    return json.loads(text)


def _find_samples(root: Path, train: bool, require_complete: bool) -> list[EventSample]:
    which = "train" if train else "test"
    split = load_split()[which]
    absent = [cls for cls in CIFAR10_DVS_CLASSES if not (root / cls).is_dir()]
    if len(absent) == len(CIFAR10_DVS_CLASSES) or (absent and require_complete):
        hint = "" if len(absent) == len(CIFAR10_DVS_CLASSES) else \
            "; pass require_complete=False (data.options.require_complete=false) to use the classes present"
        raise DataNotFoundError(root, expected=f"{_LAYOUT}\n  (missing class folder(s): {', '.join(absent)}{hint})",
                                source=_SOURCE)
    samples, missing = [], 0
    for label, cls in enumerate(CIFAR10_DVS_CLASSES):
        by_index = {}
        if cls not in absent:
            for path in (root / cls).glob("*.aedat"):
                match = _INDEX.search(path.name)
                if match:
                    by_index[int(match.group(1))] = path
        for index in split[cls]:
            if index in by_index:
                samples.append(EventSample(by_index[index], label))
            else:
                missing += 1
    total = sum(len(v) for v in split.values())
    if missing and require_complete:
        raise DataNotFoundError(
            root,
            expected=f"{_LAYOUT}\n  ({missing} file(s) of the {which} split are missing; "
            "pass require_complete=False to use the files present)",
            source=_SOURCE,
        )
    if not samples:
        example = next(f"{cls}/cifar10_{cls}_{split[cls][0]}.aedat" for cls in CIFAR10_DVS_CLASSES if split[cls])
        raise DataNotFoundError(root, expected=f"{_LAYOUT}\n  (none of the {total} files of the {which} split "
                                f"is present, e.g. {example}; the split is in tdbn/data/splits/)", source=_SOURCE)
    if missing:
        warnings.warn(f"{root}: partial copy: {len(samples)} of {total} {which} samples"
                      + (f"; missing class folder(s): {', '.join(absent)}" if absent else ""), stacklevel=3)
    return samples


class CIFAR10DVS(EventFrameDataset):
    """CIFAR10-DVS as ``(frames [T, 2, H, W], class 0..9)`` on the stored 9,000 / 1,000 split.

    Defaults are the paper's text: ``size=(42, 42)``, ``window_ms=5``, ``n_frames=10`` from the first event.
    ``window_ms=None`` cuts the whole recording into ``n_frames`` equal slices (``split_by="time"``, or equal
    event counts with ``split_by="events"``). ``require_complete=False`` accepts a partial copy of the data.
    """

    name = "cifar10_dvs"
    sensor_size = (128, 128)

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        n_frames: int | None = 10,
        window_ms: float | None = 5.0,
        size: tuple[int, int] | None = (42, 42),
        mode: Literal["count", "binary"] = "count",
        split_by: Literal["time", "events"] = "time",
        orientation: Literal["upright", "jaer"] = "upright",
        require_complete: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        if orientation not in ("upright", "jaer"):
            raise ValueError(f"orientation must be 'upright' or 'jaer', got {orientation!r}")
        self.orientation = orientation
        root = Path(root)
        super().__init__(
            root,
            _find_samples(root, train, require_complete),
            frames=FrameSettings(n_frames, window_ms, size, mode, split_by),
            classes=list(CIFAR10_DVS_CLASSES),
            cache_dir=cache_dir,
        )

    def read_file(self, path: Path) -> Events:
        return read_aedat2(path, orientation=self.orientation)

    def reader_params(self) -> dict[str, Any]:
        return {"orientation": self.orientation}
