"""From a :class:`~tdbn.train.config.DataConfig` to this process's train and test batches.

Adapts the readers of :mod:`tdbn.data` to sharded, per-epoch seeded loaders (:mod:`tdbn.train.loaders`):

- in-memory images (``digits``, ``mnist``, ``cifar10``): one uint8 tensor, batches indexed, augmented and
  normalized on the training device;
- event data (``nmnist``, ``dvs_gesture``, ``cifar10_dvs``): frames ``[T, 2, H, W]`` per sample, batched
  time-first ``[T, N, 2, H, W]``; ``data.preload=true`` converts every sample once and keeps them in memory;
- ``imagenet``: decoded by loader processes, augmentation seeded per ``(seed, epoch, index)``.

For event data the number of frames is the model's ``timesteps`` (one source of T).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tdbn import data as tdata
from tdbn.data.digits import Digits

from .config import DataConfig
from .loaders import DatasetBatches, Shard, ShardedBatchSampler, TensorBatches, fixed_subset

__all__ = ["DATASETS", "DataBundle", "build_data", "channel_stats", "check_labels"]

EVENT_DATASETS = {"nmnist": tdata.NMNIST, "dvs_gesture": tdata.DVSGesture, "cifar10_dvs": tdata.CIFAR10DVS}
IMAGE_DATASETS = {"digits": None, "mnist": tdata.MNIST, "cifar10": tdata.CIFAR10}
DATASETS = sorted([*IMAGE_DATASETS, *EVENT_DATASETS, "imagenet"])


@dataclass
class DataBundle:
    """This process's loaders and what the model needs to know about the inputs."""

    train: Any  # TensorBatches | DatasetBatches: iterable of (x, y), len(), set_epoch(epoch), num_samples
    test: Any
    num_classes: int
    in_channels: int
    input_size: int  # H (= W) of the network input
    events: bool  # inputs are event frames [T, N, C, H, W] (else static images [N, C, H, W])


class _Subset(Dataset):
    """``dataset`` restricted to ``indices``; keys may be ``(index, seed)`` pairs (ImageNet)."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.tolist()
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], key[1])]
        return self.dataset[self.indices[key]]


def check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """``DataFormatError`` naming the data set when a label falls outside ``0 .. num_classes - 1``."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= num_classes)].unique()[:10]})
        raise tdata.DataFormatError(where, None, f"labels {bad} outside 0..{num_classes - 1} "
                                    f"({num_classes} classes); labels must be class indices from 0")


def _root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise ValueError(f"data set {cfg.name!r} needs data.root (e.g. data.root=../shared/data/{cfg.name})")
    return Path(cfg.root)


def _image_dataset(cfg: DataConfig, train: bool) -> tdata.InMemoryImages:
    options = {k: v for k, v in cfg.options.items() if k not in ("mean", "std")}
    if cfg.name == "digits":
        if options:
            raise ValueError(f"data set 'digits' takes no data.options but mean and std, got {sorted(options)}")
        ds: tdata.InMemoryImages = Digits(train=train)
    else:
        ds = IMAGE_DATASETS[cfg.name](_root(cfg), train=train, **options)
    channels = ds.images.shape[1]
    for key in ("mean", "std"):
        if key in cfg.options:
            value = cfg.options[key]
            value = [value] if isinstance(value, (int, float)) else value
            if not isinstance(value, (list, tuple)) or len(value) != channels or \
                    not all(isinstance(v, (int, float)) for v in value) or (key == "std" and min(value) <= 0):
                raise ValueError(f"data.options.{key} must be a list of {channels} number(s) (one per channel"
                                 f"{', > 0' if key == 'std' else ''}), got {value!r}")
            setattr(ds, key, tuple(float(v) for v in value))
    return ds


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images ``[N, C, H, W]``, of pixel values / 255."""
    n, c = images.shape[:2]
    total = torch.zeros(c, dtype=torch.float64)
    square = torch.zeros(c, dtype=torch.float64)
    count = 0
    for chunk in images.split(4096):  # bounded memory for large sets
        x = chunk.to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        square += (x * x).sum(1)
        count += x.shape[1]
    mean = total / max(count, 1)
    std = (square / max(count, 1) - mean * mean).clamp_min(0).sqrt()
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-6), 6) for v in std]


def _image_loader(ds: tdata.InMemoryImages, cfg: DataConfig, *, train: bool, batch_size: int, seed: int,
                  shard: Shard, device: torch.device) -> TensorBatches:
    images, labels = ds.images, ds.labels
    subset = fixed_subset(len(labels), cfg.train_limit if train else cfg.test_limit)
    if subset is not None:
        images, labels = images[subset], labels[subset]
    augment = None
    if train and cfg.augment and ds.augment_padding is not None:  # the data set's own augmentation, if any
        augment = lambda x, g: ds.augment(x, generator=g)  # noqa: E731
    mean, std = ds.mean, ds.std
    return TensorBatches(
        images, labels, batch_size=batch_size, shuffle=train, seed=seed, shard=shard, augment=augment,
        transform=lambda x: tdata.normalize(x, mean=mean, std=std), device=device,
    )


def _event_dataset(cfg: DataConfig, train: bool, timesteps: int) -> Dataset:
    options = dict(cfg.options)
    if "n_frames" in options and options["n_frames"] != timesteps:
        raise ValueError(f"data.options.n_frames={options['n_frames']} differs from model.timesteps={timesteps}; "
                         "event frames are the time steps: set model.timesteps only")
    options["n_frames"] = timesteps
    if "size" in options and options["size"] is not None:
        options["size"] = tuple(options["size"])
    return EVENT_DATASETS[cfg.name](_root(cfg), train=train, cache_dir=cfg.cache_dir, **options)


def _preload(ds: Dataset, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of ``ds`` in one tensor ``[N, ...]`` (uint8 when the values are small counts)."""
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=64, num_workers=workers):
        xs.append(x)
        ys.append(y)
    data, labels = torch.cat(xs), torch.cat(ys)
    if torch.equal(data, data.round()) and data.min() >= 0 and data.max() <= 255:
        data = data.to(torch.uint8)
    return data, labels


def _dataset_loader(ds: Dataset, cfg: DataConfig, *, train: bool, batch_size: int, seed: int, shard: Shard,
                    device: torch.device, events: bool, keyed: bool) -> TensorBatches | DatasetBatches:
    subset = fixed_subset(len(ds), cfg.train_limit if train else cfg.test_limit)
    if subset is not None:
        ds = _Subset(ds, subset)
    if cfg.preload:
        data, labels = _preload(ds, cfg.workers)
        return TensorBatches(data, labels, batch_size=batch_size, shuffle=train, seed=seed, shard=shard,
                             time_first=events, device=device)
    sampler = ShardedBatchSampler(len(ds), batch_size=batch_size, shuffle=train, seed=seed, shard=shard,
                                  keyed=keyed and train)
    collate: Callable | None = tdata.collate_time_first if events else None
    return DatasetBatches(ds, sampler, workers=cfg.workers, collate_fn=collate)


def build_data(cfg: DataConfig, *, batch_size: int, timesteps: int, seed: int, shard: Shard = Shard(),
               device: str | torch.device = "cpu", eval_batch_size: int | None = None,
               train: bool = True, log: Callable[[str], None] | None = None) -> DataBundle:
    """Train and test loaders of this process; ``train=False`` builds only the test loader (``train=None``).

    ``batch_size`` is per process. Raises ``ValueError`` for an unknown data set (listing the valid ones) and
    :class:`tdbn.data.DataNotFoundError` (naming the folder and the expected layout) for missing data.

    In-memory image sets are normalized with ``data.options.mean`` / ``std`` (per channel, of pixel values /
    255); when these are not given, they are computed from the training split and written into ``cfg.options``,
    so the resolved configuration (and every checkpoint) records them. ``log`` receives progress lines.
    """
    device = torch.device(device)
    eval_bs = eval_batch_size or batch_size
    common = dict(seed=seed, shard=shard, device=device)
    say = log or (lambda msg: None)
    if cfg.name in IMAGE_DATASETS:
        where = f" from {cfg.root}" if cfg.root else ""
        started = time.perf_counter()
        if cfg.name == "cifar10":
            say(f"loading {cfg.name}{where} ({'train and test' if train else 'test'} split; decoding the images "
                "takes a while) ...")
        train_ds = _image_dataset(cfg, train=True) if train else None
        test_ds = _image_dataset(cfg, train=False)
        if cfg.name == "cifar10":
            say(f"loaded {len(test_ds) + (len(train_ds) if train_ds is not None else 0)} images in "
                f"{time.perf_counter() - started:.1f} s")
        if train_ds is not None and ("mean" not in cfg.options or "std" not in cfg.options):
            mean, std = channel_stats(train_ds.images)  # the training split's own statistics
            cfg.options = {**cfg.options, "mean": cfg.options.get("mean", mean), "std": cfg.options.get("std", std)}
            for ds in (train_ds, test_ds):
                ds.mean, ds.std = tuple(cfg.options["mean"]), tuple(cfg.options["std"])
            say(f"normalization from the {len(train_ds)} training images: mean {cfg.options['mean']}, "
                f"std {cfg.options['std']} (stored as data.options.mean/std)")
        for ds in (train_ds, test_ds):
            if ds is not None:
                check_labels(ds.labels, len(test_ds.classes), f"{cfg.name} {cfg.root or ''}".strip())
        test = _image_loader(test_ds, cfg, train=False, batch_size=eval_bs, **common)
        tr = _image_loader(train_ds, cfg, train=True, batch_size=batch_size, **common) if train_ds is not None \
            else None
        c, h = test_ds.images.shape[1], test_ds.images.shape[2]
        return DataBundle(tr, test, len(test_ds.classes), c, h, events=False)
    if cfg.name in EVENT_DATASETS:
        make = lambda split: _event_dataset(cfg, split, timesteps)  # noqa: E731
        events, keyed = True, False
    elif cfg.name == "imagenet":
        make = lambda split: tdata.ImageNet(_root(cfg), train=split, seed=seed, **cfg.options)  # noqa: E731
        events, keyed = False, True
    else:
        raise ValueError(f"unknown data set {cfg.name!r}; valid: {', '.join(DATASETS)}")
    test_ds = make(False)
    if len(test_ds) == 0:
        raise tdata.DataFormatError(_root(cfg), None, f"the {cfg.name} test split is empty; the folder holds no "
                                    "test sample (see docs/data.md for the layout)")
    sample = test_ds[0][0]  # [T, C, H, W] frames or [C, H, W] image
    test = _dataset_loader(test_ds, cfg, train=False, batch_size=eval_bs, events=events, keyed=keyed, **common)
    train_ds = make(True) if train else None
    if train_ds is not None and len(train_ds) == 0:
        raise tdata.DataFormatError(_root(cfg), None, f"the {cfg.name} training split is empty (docs/data.md)")
    tr = _dataset_loader(train_ds, cfg, train=True, batch_size=batch_size, events=events, keyed=keyed,
                         **common) if train_ds is not None else None
    return DataBundle(tr, test, len(test_ds.classes), sample.shape[-3], sample.shape[-2], events=events)
