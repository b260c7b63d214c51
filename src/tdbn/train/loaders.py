"""Reproducible, process-sharded batches: the same global batches whatever the number of processes.

Every epoch draws its order (and augmentation) from a generator seeded by ``(seed, epoch)`` alone, so resuming at
epoch ``e`` replays exactly the batches an uninterrupted run would have seen. Under data-parallel training each
process takes a strided share ``global_batch[rank::world]`` of the same global batch of ``batch_size * world``
samples; with tdBN statistics synchronized across processes, ``world`` processes then compute exactly what one
process computes on the whole global batch. Training drops the last incomplete global batch; evaluation keeps
every sample once (shard ``rank::world`` of the test set, no padding).

An epoch can also start in its middle: ``set_epoch(epoch, start=k, generator_state=...)`` skips the first ``k``
batches of the same order and continues the augmentation generator from ``generator_state()`` as it was after
batch ``k`` (what a mid-epoch checkpoint stores), so the remaining batches equal those of an uninterrupted epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["DatasetBatches", "Shard", "ShardedBatchSampler", "TensorBatches", "epoch_seed", "fixed_subset"]

SUBSET_SEED = 20210205  # fixed: train_limit / test_limit subsets do not depend on the run's seed


@dataclass(frozen=True)
class Shard:
    """This process's place in data-parallel training."""

    rank: int = 0
    world: int = 1


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def fixed_subset(n: int, limit: int | None) -> torch.Tensor | None:
    """Sorted indices of a fixed random subset of ``limit`` of ``n`` samples (None: all)."""
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=g)[:limit].sort().values


def _batches(n: int, *, batch_size: int, shuffle: bool, seed: int, epoch: int, shard: Shard, generator=None,
             start: int = 0):
    """Index lists of this process's batches for one epoch, from batch ``start`` on (see the module docstring)."""
    if shuffle:
        g = generator if generator is not None else torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g, device=g.device)
        step = batch_size * shard.world
        for b in range(start, n // step):  # drop the last incomplete global batch
            yield order[b * step : (b + 1) * step], shard
    else:
        local = torch.arange(shard.rank, n, shard.world)
        for b in range(start * batch_size, len(local), batch_size):
            yield local[b : b + batch_size], None


def _num_batches(n: int, *, batch_size: int, shuffle: bool, shard: Shard) -> int:
    if shuffle:
        return n // (batch_size * shard.world)
    local = len(range(shard.rank, n, shard.world))
    return -(-local // batch_size)


class TensorBatches:
    """Batches of a data set held in memory as one tensor ``data [N, ...]`` with ``labels [N]``.

    Args:
        data, labels: the whole data set (uint8 images or event frames), moved once to ``device``.
        transform: raw batch -> float network input (e.g. normalization), applied after augmentation.
        augment: ``(batch, generator) -> batch``; drawn from the epoch's generator, applied to the global batch
            before sharding, so augmentation too is independent of the number of processes.
        time_first: samples are ``[T, ...]`` (event frames): batches come out ``[T, N, ...]``.
    """

    def __init__(
        self,
        data: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        shard: Shard = Shard(),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        time_first: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if data.shape[0] != labels.shape[0]:
            raise ValueError(f"{data.shape[0]} samples but {labels.shape[0]} labels")
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shard = shard
        self.transform = transform
        self.augment = augment
        self.time_first = time_first
        self.epoch = 0
        self.start = 0  # first batch of the next pass (a resumed epoch)
        self._resume_state: torch.Tensor | None = None
        self._generator: torch.Generator | None = None

    def __len__(self) -> int:
        return _num_batches(len(self.labels), batch_size=self.batch_size, shuffle=self.shuffle, shard=self.shard)

    def set_epoch(self, epoch: int, *, start: int = 0, generator_state: torch.Tensor | None = None) -> None:
        """The next pass is epoch ``epoch`` from batch ``start`` (module docstring)."""
        self.epoch, self.start, self._resume_state = epoch, start, generator_state

    def generator_state(self) -> torch.Tensor | None:
        """The state of the epoch's generator after the last batch handed out (None before the first pass)."""
        return self._generator.get_state() if self._generator is not None else None

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        self._generator = g
        start, resume = self.start, self._resume_state
        self.start, self._resume_state = 0, None  # one resumed pass; the next starts at the beginning
        for index, shard in _batches(
            len(self.labels), batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            shard=self.shard, generator=g, start=start,
        ):
            if resume is not None:  # after the order was drawn: continue the augmentation draws where they stopped
                g.set_state(resume)
                resume = None
            index = index.to(self.device)
            x, y = self.data[index], self.labels[index]
            if self.augment is not None and self.shuffle:
                x = self.augment(x, g)
            if shard is not None:  # this process's share of the global batch
                x, y = x[shard.rank :: shard.world], y[shard.rank :: shard.world]
            x = self.transform(x) if self.transform is not None else x.float()
            if self.time_first:
                x = x.transpose(0, 1)  # [N, T, ...] -> [T, N, ...]
            yield x, y


class ShardedBatchSampler(Sampler):
    """Index batches of this process (module docstring), for a ``DataLoader(batch_sampler=...)``.

    ``keyed=True`` yields ``(index, epoch_seed)`` pairs, the keys of data sets whose augmentation is seeded per
    epoch (:class:`tdbn.data.ImageNet`).
    """

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int = 0, shard: Shard = Shard(),
                 keyed: bool = False) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shard = shard
        self.keyed = keyed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return _num_batches(self.n, batch_size=self.batch_size, shuffle=self.shuffle, shard=self.shard)

    def __iter__(self) -> Iterator[list]:
        key_seed = epoch_seed(self.seed, self.epoch)
        start, self.start = self.start, 0
        for index, shard in _batches(
            self.n, batch_size=self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            shard=self.shard, start=start,
        ):
            if shard is not None:
                index = index[shard.rank :: shard.world]
            ids = index.tolist()
            yield [(i, key_seed) for i in ids] if self.keyed else ids


class DatasetBatches:
    """A ``DataLoader`` over a map-style data set with a :class:`ShardedBatchSampler` and ``set_epoch``."""

    def __init__(self, dataset: Dataset, sampler: ShardedBatchSampler, *, workers: int = 0,
                 collate_fn: Callable | None = None) -> None:
        self.sampler = sampler
        self.loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_fn,
            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def num_samples(self) -> int:
        return self.sampler.n

    def set_epoch(self, epoch: int, *, start: int = 0, generator_state: torch.Tensor | None = None) -> None:
        """Epoch ``epoch`` from batch ``start``; augmentation is keyed by sample, so no generator state is needed."""
        self.sampler.set_epoch(epoch, start=start)

    def generator_state(self) -> None:
        return None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)
