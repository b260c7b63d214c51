"""The embedded default data set: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``).

1,797 real 8x8 grey-level images of the digits 0-9 (the UCI "Optical Recognition of Handwritten Digits" test
set), shipped inside scikit-learn, so ``tdbn train`` runs with no download. Pixel values 0..16 are stored as
uint8 0..255 (``round(v * 255 / 16)``), as one ``[N, 1, 8, 8]`` tensor.

Split: a fixed held-out test set, the first 360 images (20 %) of a seeded permutation of all 1,797
(``numpy.random.RandomState(0)``, stable across numpy versions; 27 to 44 images per class); the other 1,437
images train.
Normalization uses the mean and standard deviation of the training split. No augmentation is defined: the
digits were size-normalized and centred when the data set was made, so shifted digits do not occur (in our
runs, random one-pixel shifts slowed training and lowered test accuracy), and they are not mirror-symmetric.

>>> train, test = Digits(train=True), Digits(train=False)
>>> len(train), len(test), tuple(train.images.shape[1:])
(1437, 360, (1, 8, 8))
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from tdbn.data.inmemory import InMemoryImages

__all__ = ["Digits", "digits_split", "load_digit_arrays"]

TEST_SIZE = 360
SPLIT_SEED = 0


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split: ``(train indices, test indices)``, each sorted."""
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    return np.sort(order[TEST_SIZE:]), np.sort(order[:TEST_SIZE])


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(values [1797, 8, 8] float 0..16, labels [1797] int64)``, the data of ``sklearn.datasets.load_digits``.

    Read straight from the ``digits.csv.gz`` that scikit-learn ships (64 pixel values and the label per row),
    which avoids importing scikit-learn (seconds); falls back to ``load_digits`` if that file is not found.
    """
    try:
        spec = importlib.util.find_spec("sklearn")
    except ImportError:  # a broken or hidden installation counts as missing
        spec = None
    if spec is None:
        raise ImportError("the embedded digits data set needs scikit-learn: pip install 'tdbn[train]'")
    for folder in spec.submodule_search_locations or []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            rows = np.loadtxt(path, delimiter=",", dtype=np.float64)  # [1797, 65]
            return rows[:, :64].reshape(-1, 8, 8), rows[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


class Digits(InMemoryImages):
    """scikit-learn's 8x8 digits as ``images [N, 1, 8, 8]`` uint8 and ``labels [N]`` (split: module docstring)."""

    def __init__(self, *, train: bool = True) -> None:
        values, labels = load_digit_arrays()
        images = np.rint(values * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
        train_idx, test_idx = digits_split(labels)
        pixels = images[train_idx].astype(np.float64) / 255.0
        self.mean = (float(pixels.mean()),)
        self.std = (float(pixels.std()),)
        keep = train_idx if train else test_idx
        super().__init__(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]), [str(d) for d in range(10)])
