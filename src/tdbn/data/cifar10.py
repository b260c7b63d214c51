"""CIFAR-10 (Krizhevsky 2009), whole in memory: 50,000 train / 10,000 test, 32x32 RGB, 10 classes.

Paper setting (appendix C, docs/method.md section 6): random crop with 4-pixel zero padding and horizontal flip, then
per-channel mean/std normalization; the network sees the same image at each of T in {2, 4, 6} steps. Training
batches whole tensors (``tdbn.train.loaders.TensorBatches``: augmentation on the device).

Layouts read (``root`` is the folder that holds them):

- the official Python release: ``cifar-10-batches-py/`` with pickled ``data_batch_1..5`` and ``test_batch``
  (``root`` may also be that folder itself);
- zip archives ``train.zip`` / ``test.zip`` with members ``train/<class>/*.jpg``, ``test/<class>/*.jpg``
  (as in ``../shared/data/cifar10-jpeg``);
- image folders ``train/<class>/*.{jpg,jpeg,png}``, ``test/<class>/...``.

Classes are ordered by name, which for CIFAR-10 is the official label order (airplane = 0 ... truck = 9).
Image layouts need Pillow (``pip install 'tdbn[vision]'``).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from tdbn.data.errors import DataFormatError, DataNotFoundError
from tdbn.data.inmemory import InMemoryImages

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10"]

#: Per-channel mean and standard deviation of the 50,000 training images (pixel values / 255).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LAYOUT = """\
  <root>/cifar-10-batches-py/{data_batch_1..5, test_batch}     (official Python release), or
  <root>/train.zip, <root>/test.zip  with members train/<class>/*.jpg, test/<class>/*.jpg, or
  <root>/train/<class>/*.jpg, <root>/test/<class>/*.jpg"""
_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version; extract into <root>)"


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("reading CIFAR-10 images needs Pillow: pip install 'tdbn[vision]'") from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except OSError as err:
        raise DataFormatError(where, None, f"cannot decode image: {err}") from None


def _stack(items: Iterable[tuple[str, bytes]], where: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for cls, data in items:
        images.append(_decode(data, where))
        labels.append(classes.index(cls))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataFormatError(where, None, f"images differ in size: {sorted(shapes)}")
    return np.stack(images), np.asarray(labels)


def _select(names: list[tuple[str, str]], limit_per_class: int | None) -> list[tuple[str, str]]:
    """(class, name) pairs sorted by class then name, at most ``limit_per_class`` per class."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for cls, name in names:
        by_class[cls].append(name)
    return [(cls, n) for cls in sorted(by_class) for n in sorted(by_class[cls])[:limit_per_class]]


def _read_pickles(folder: Path, train: bool, limit_per_class: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] if train else [folder / "test_batch"]
    data, labels = [], []
    for file in files:
        if not file.is_file():
            raise DataNotFoundError(file, expected=_LAYOUT, source=_SOURCE)
        try:
            with open(file, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise DataFormatError(file, None, f"not a CIFAR-10 python batch: {err!r}") from None
        if len(x) != len(y):
            raise DataFormatError(file, None, f"{len(x)} images but {len(y)} labels")
        data.append(x)
        labels.append(y)
    x, y = np.concatenate(data), np.concatenate(labels)
    if limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(y == c)[:limit_per_class] for c in range(10)])
        keep.sort()
        x, y = x[keep], y[keep]
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = [c.decode() for c in pickle.load(f, encoding="bytes")[b"label_names"]]
    return x, y, classes


def _read_zip(path: Path, split: str, limit_per_class: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with zipfile.ZipFile(path) as archive:
        names = []
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == split and name.lower().endswith(_IMAGE_SUFFIXES):
                names.append((parts[1], name))
        if not names:
            raise DataNotFoundError(path, expected=_LAYOUT, source=_SOURCE)
        chosen = _select(names, limit_per_class)
        classes = sorted({cls for cls, _ in names})
        x, y = _stack(((cls, archive.read(n)) for cls, n in chosen), str(path), classes)
    return x.transpose(0, 3, 1, 2), y, classes


def _read_folder(folder: Path, limit_per_class: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = [
        (d.name, str(f))
        for d in folder.iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if f.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if not names:
        raise DataNotFoundError(folder, expected=_LAYOUT, source=_SOURCE)
    chosen = _select(names, limit_per_class)
    classes = sorted({cls for cls, _ in names})
    x, y = _stack(((cls, Path(n).read_bytes()) for cls, n in chosen), str(folder), classes)
    return x.transpose(0, 3, 1, 2), y, classes


class CIFAR10(InMemoryImages):
    """CIFAR-10 as one uint8 tensor ``images [N, 3, 32, 32]`` and ``labels [N]`` (layouts: module docstring).

    ``limit_per_class`` keeps the first images of each class (by file name), for quick experiments and tests.
    Augmentation (:meth:`augment`, on whole batches): random crop, padding 4, horizontal flip.
    """

    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    augment_padding = 4
    augment_flip = True

    def __init__(self, root: str | Path, *, train: bool = True, limit_per_class: int | None = None) -> None:
        root = Path(root)
        split = "train" if train else "test"
        pickles = next((d for d in (root / "cifar-10-batches-py", root) if (d / "test_batch").is_file()), None)
        if pickles is not None:
            x, y, classes = _read_pickles(pickles, train, limit_per_class)
        elif (root / f"{split}.zip").is_file():
            x, y, classes = _read_zip(root / f"{split}.zip", split, limit_per_class)
        elif (root / split).is_dir():
            x, y, classes = _read_folder(root / split, limit_per_class)
        else:
            raise DataNotFoundError(root, expected=_LAYOUT, source=_SOURCE)
        super().__init__(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes)
