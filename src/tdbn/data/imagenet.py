"""ImageNet (ILSVRC-2012) from the usual class-folder layout, decoded in parallel worker processes.

Layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (the official validation images sorted
into class folders, e.g. by the widely used ``valprep.sh``); a class folder may keep its images in an ``images/``
subfolder (Tiny-ImageNet's training layout). Labels are the index of the wnid among the sorted ``train`` folders,
so train and val agree. Any image folder of this layout works; for small images set ``crop_size`` /
``resize_size`` to their size (preset ``image_folder_64``): a crop larger than the images upscales them, which
costs time and adds nothing, and warns.

Paper setting (appendix C, docs/method.md section 6): training images get a random resized crop to 224 (area 8-100 %,
aspect 3/4-4/3) and a horizontal flip; evaluation images are resized (shorter side 256) and center-cropped to
224; both are normalized with the ImageNet mean / std; the network sees each image for T = 6 steps.

Randomness is reproducible and independent of the number of workers: index the data set with
``(index, epoch seed)`` keys (what ``tdbn.train.loaders.ShardedBatchSampler(keyed=True)`` yields in training) and
the crop and flip of sample ``i`` are drawn from ``(epoch seed, i)``. Decoding uses Pillow
(``pip install 'tdbn[vision]'``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tdbn.data.errors import DataFormatError, DataNotFoundError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "random_resized_crop_box",
    "ImageNet",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SUFFIXES = (".jpeg", ".jpg", ".png")
_LAYOUT = ("  <root>/train/<wnid>/*.JPEG   and   <root>/val/<wnid>/*.JPEG   (val sorted into class folders;\n"
           "  <wnid>/images/*.JPEG also works)")
_SOURCE = "https://image-net.org/download (ILSVRC2012 train and val; sort val into <wnid> folders, e.g. valprep.sh)"


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A crop box ``(left, top, right, bottom)`` covering a random ``scale`` fraction of the area with a random
    aspect ratio in ``ratio`` (log-uniform); after 10 failed draws, the central crop clamped to ``ratio``.

    >>> left, top, right, bottom = random_resized_crop_box(32, 32, np.random.default_rng(0))
    >>> 0 <= left < right <= 32 and 0 <= top < bottom <= 32
    True
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


class ImageNet(Dataset):
    """ImageNet as ``(image [3, crop, crop] float normalized, label)``; ``train`` picks augmentation or eval crop.

    Index with ``(index, seed)`` pairs (what the training sampler yields) to vary the training augmentation
    from epoch to epoch; a plain ``index`` uses the fixed ``seed`` given here.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool = True,
        crop_size: int = 224,
        resize_size: int = 256,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        seed: int = 0,
    ) -> None:
        root = Path(root)
        folder = root / ("train" if train else "val")
        if not root.is_dir():  # name the root itself, not a split folder under it
            raise DataNotFoundError(root, expected=_LAYOUT, source=_SOURCE)
        if not folder.is_dir():
            raise DataNotFoundError(folder, expected=_LAYOUT, source=_SOURCE)
        class_root = root / "train" if (root / "train").is_dir() else folder
        self.classes = sorted(d.name for d in class_root.iterdir() if d.is_dir())
        index = {wnid: i for i, wnid in enumerate(self.classes)}
        self.samples = [
            (path, index[d.name])
            for d in sorted(folder.iterdir())
            if d.is_dir() and d.name in index
            for path in sorted((d / "images" if (d / "images").is_dir() else d).iterdir())
            if path.suffix.lower() in _SUFFIXES
        ]
        if not self.samples:
            raise DataNotFoundError(folder, expected=_LAYOUT, source=_SOURCE)
        if crop_size < 1 or resize_size < crop_size:
            raise ValueError(f"crop_size must be >= 1 and resize_size >= crop_size, got crop_size={crop_size}, "
                             f"resize_size={resize_size} (data.options)")
        first = self._load(self.samples[0][0])
        if min(first.size) < crop_size:
            warnings.warn(
                f"{self.samples[0][0]}: the images are {first.size[0]}x{first.size[1]}, smaller than crop_size="
                f"{crop_size}: they are upscaled, which is slow and adds no detail; set data.options.crop_size "
                f"and resize_size to about their size (preset image_folder_64 for 64x64 images)", stacklevel=2)
        self.train = train
        self.crop_size = crop_size
        self.resize_size = resize_size
        self.scale = scale
        self.ratio = ratio
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, self.seed)
        path, label = self.samples[index]
        image = self._load(path)
        if self.train:
            rng = np.random.default_rng([seed, index])
            box = random_resized_crop_box(image.width, image.height, rng, scale=self.scale, ratio=self.ratio)
            image = image.resize((self.crop_size, self.crop_size), _bilinear(), box=box)
            if rng.random() < 0.5:
                image = image.transpose(_flip())
        else:
            w, h = image.size  # shorter side to resize_size, aspect kept
            r = self.resize_size
            size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
            image = image.resize(size, _bilinear())
            left = int(round((size[0] - self.crop_size) / 2.0))
            top = int(round((size[1] - self.crop_size) / 2.0))
            image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # [3, H, W]
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x.to(torch.float32) / 255.0 - mean) / std, label

    @staticmethod
    def _load(path: Path):  # -> PIL.Image.Image
        try:
            from PIL import Image
        except ImportError as err:  # pragma: no cover - depends on the installed extras
            raise ImportError("reading ImageNet needs Pillow: pip install 'tdbn[vision]'") from err
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as err:
            raise DataFormatError(path, None, f"cannot decode image: {err}") from None


def _bilinear() -> int:
    from PIL import Image

    return Image.Resampling.BILINEAR


def _flip() -> int:
    from PIL import Image

    return Image.Transpose.FLIP_LEFT_RIGHT
