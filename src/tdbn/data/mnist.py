"""MNIST (and any data set stored like it, e.g. Fashion-MNIST), whole in memory: ``images [N, 1, 28, 28]`` uint8.

Not one of the paper's data sets; a quick sanity check for the static-image path. Layouts read:

- an ``.npz`` with ``x_train [N, H, W] uint8``, ``y_train [N]``, ``x_test``, ``y_test`` (the Keras layout, as in
  ``../shared/data/mnist/mnist.npz``); ``root`` is the file or a folder holding one ``*.npz``;
- the original idx files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte`` (optionally ``.gz``; a ``.`` instead of the last ``-`` is accepted too).

Normalized with the MNIST training mean / std by default; pass ``mean``/``std`` for another data set
(:data:`FASHION_MNIST_MEAN`, :data:`FASHION_MNIST_STD`). No augmentation is defined.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from tdbn.data.errors import DataFormatError, DataNotFoundError
from tdbn.data.inmemory import InMemoryImages

__all__ = ["MNIST_MEAN", "MNIST_STD", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "read_idx", "MNIST"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

_LAYOUT = """\
  <root>/<name>.npz with x_train [N,28,28] uint8, y_train [N], x_test, y_test   (or <root> is that .npz), or
  <root>/train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
  <root>/t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"""
_SOURCE = (
    "http://yann.lecun.com/exdb/mnist/ (idx files) or "
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (uint8 data only): magic ``0x00 0x00 0x08 ndim``, ``ndim`` big-endian uint32 sizes, data."""
    path = Path(path)
    raw = bytearray(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())  # writable
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataFormatError(path, 0, "not a uint8 idx file (magic bytes 00 00 08 expected)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(path, 4, f"truncated header: {ndim} dimension sizes expected")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataFormatError(path, header + min(size, len(raw) - header),
                              f"{len(raw) - header} data bytes, shape {shape} needs {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = root / f"{prefix}-{kind}{sep}idx{3 if kind == 'images' else 1}-ubyte{suffix}"
            if path.is_file():
                return path
    return None


def _read_npz(path: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataFormatError(path, None, "not an .npz archive (a single .npy array)")
            missing = {f"x_{split}", f"y_{split}"} - set(archive.files)
            if missing:
                raise DataFormatError(path, None, f"missing array(s) {sorted(missing)}; has {sorted(archive.files)}")
            return archive[f"x_{split}"], archive[f"y_{split}"]
    except DataFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile, zlib and numpy raise many types for a damaged file
        raise DataFormatError(path, None, f"not a readable .npz archive: truncated, corrupted or another kind of "
                              f"file ({type(err).__name__}); download it again") from None


class MNIST(InMemoryImages):
    """MNIST-like data as ``images [N, 1, H, W]`` uint8, ``labels [N]``; normalized by ``mean``/``std``.

    Labels must lie in ``0 .. num_classes - 1`` (checked here, naming the file).
    """

    mean = MNIST_MEAN
    std = MNIST_STD

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        mean: tuple[float, ...] = MNIST_MEAN,
        std: tuple[float, ...] = MNIST_STD,
        num_classes: int = 10,
    ) -> None:
        root = Path(root)
        prefix = "train" if train else "t10k"
        if root.suffix == ".npz" and root.is_file():
            npz = [root]
        else:
            npz = sorted(root.glob("*.npz")) if root.is_dir() else []
        images_idx = _find_idx(root, prefix, "images") if root.is_dir() else None
        labels_idx = _find_idx(root, prefix, "labels") if root.is_dir() else None
        if len(npz) == 1:
            source: Path = npz[0]
            x, y = _read_npz(source, train)
        elif images_idx is not None and labels_idx is not None:
            source = images_idx
            x, y = read_idx(images_idx), read_idx(labels_idx)
        else:
            wrong_kind = "a file that is not an .npz archive (give the .npz file or the folder of idx files)"
            raise DataNotFoundError(root, expected=_LAYOUT, source=_SOURCE,
                                    problem=wrong_kind if root.is_file() else None)
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataFormatError(source, None, f"expected images [N, H, W] uint8 and labels [N], got "
                                  f"{x.shape} {x.dtype} and {y.shape}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = sorted({int(v) for v in np.unique(y[(y < 0) | (y >= num_classes)])[:10]})
            raise DataFormatError(source, None, f"{'train' if train else 'test'} labels {bad} outside "
                                  f"0..{num_classes - 1}; set data.options.num_classes if the data set has "
                                  f"more than {num_classes} classes")
        self.mean, self.std = tuple(mean), tuple(std)
        classes = [str(c) for c in range(num_classes)]
        super().__init__(torch.from_numpy(np.ascontiguousarray(x[:, None])), torch.from_numpy(y.astype(np.int64)),
                         classes)
