"""Small image data sets held whole in memory as one uint8 tensor, batched and augmented on the training device.

CIFAR-10 (50,000 x 3 x 32 x 32 bytes = 150 MiB) and MNIST fit in memory and on any GPU. Instead of per-image
Python transforms in loader processes, training (``tdbn.train.loaders.TensorBatches``) indexes a batch out of the
device-resident uint8 tensor, augments the whole batch with a few tensor ops (:func:`augment_batch`) and
normalizes it (:func:`normalize`), all driven by one seeded ``torch.Generator``: reproducible, and fast on a GPU.

Static images come out as ``[N, C, H, W]`` float; the models repeat them over the T time steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["InMemoryImages", "augment_batch", "normalize"]


def augment_batch(
    images: torch.Tensor, *, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop with zero ``padding`` and random horizontal flip of a whole batch ``[N, C, H, W]``.

    The standard CIFAR-10 augmentation of the paper (appendix C: random crop with 4-pixel padding, horizontal
    flip), as one gather: each image gets its own offset in ``[0, 2*padding]`` and a flip with probability 1/2,
    drawn from ``generator`` (which must live on ``images.device``), in that order. Dtype and shape are kept.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    >>> y = augment_batch(x, generator=g, padding=2)
    >>> y.shape == x.shape, y.dtype
    (True, torch.uint8)
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # [N, C, H + 2p, W + 2p], zeros outside
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    rows = oy[:, None] + torch.arange(h, device=device)  # [N, H]
    cols = ox[:, None] + torch.arange(w, device=device)  # [N, W]
    if flip:
        flipped = torch.rand(n, generator=generator, device=device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` (0..255) to float32 ``(x / 255 - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s


class InMemoryImages(Dataset):
    """A whole image data set in memory: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``.

    As a ``Dataset`` it yields single normalized ``(image [C, H, W] float, label)`` pairs (no augmentation);
    training batches whole tensors instead (``tdbn.train.loaders.TensorBatches``).
    """

    mean: tuple[float, ...]  # per channel, of pixel values / 255
    std: tuple[float, ...]
    augment_padding: ClassVar[int | None] = None  # None: this data set defines no augmentation
    augment_flip: ClassVar[bool] = False

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"expected uint8 images [N, C, H, W] and labels [N], got {images.shape} {images.dtype}, "
                             f"{tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return normalize(self.images[index : index + 1], mean=self.mean, std=self.std)[0], int(self.labels[index])

    def augment(self, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """This data set's training augmentation of a uint8 batch."""
        if self.augment_padding is None:
            raise ValueError(f"{type(self).__name__} defines no augmentation")
        return augment_batch(images, generator=generator, padding=self.augment_padding, flip=self.augment_flip)
