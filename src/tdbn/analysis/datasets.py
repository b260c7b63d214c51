"""Static-image inputs for the analysis studies, read with :mod:`tdbn.data` and held as normalized tensors.

The studies need a few thousand images, not a data pipeline: no augmentation, a fixed subset per class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

#: Data sets the studies read, with their default location relative to the repository root.
DEFAULT_ROOTS = {"cifar10": "../shared/data/cifar10-jpeg", "mnist": "../shared/data/mnist/mnist.npz"}


def load_images(
    dataset: str,
    root: str | Path | None = None,
    *,
    train: bool,
    limit_per_class: int | None = None,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images ``[N, C, H, W]`` float and labels ``[N]`` of ``"cifar10"`` or ``"mnist"``.

    ``root`` defaults to ``DEFAULT_ROOTS[dataset]``; ``limit_per_class`` keeps the first images of each class;
    ``size`` resizes by area averaging (e.g. MNIST 28 -> 14).
    """
    from .. import data

    if dataset not in DEFAULT_ROOTS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(DEFAULT_ROOTS)}")
    root = Path(root if root is not None else DEFAULT_ROOTS[dataset])
    if dataset == "cifar10":
        ds = data.CIFAR10(root, train=train, limit_per_class=limit_per_class)
        images, labels = ds.images, ds.labels
    else:
        ds = data.MNIST(root, train=train)
        images, labels = ds.images, ds.labels
        if limit_per_class is not None:
            keep = torch.cat([torch.nonzero(labels == c).flatten()[:limit_per_class] for c in labels.unique()])
            keep = keep.sort().values
            images, labels = images[keep], labels[keep]
    x = data.normalize(images, mean=ds.mean, std=ds.std)  # [N, C, H, W] float32
    if size is not None and size != x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, size)
    return x, labels


def batches(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches (a new permutation each pass; the last partial batch is dropped).

    Example:
        >>> it = batches(torch.arange(5.0), torch.arange(5), batch_size=2)
        >>> [len(next(it)[0]) for _ in range(3)]
        [2, 2, 2]
    """
    if not 1 <= batch_size <= len(x):
        raise ValueError(f"batch_size must be in [1, {len(x)}] (the number of examples), got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]
