"""Sharded, per-epoch seeded batches: K processes see exactly the global batches of one process."""

from __future__ import annotations

import torch

from tdbn.data.digits import Digits, load_digit_arrays
from tdbn.train.data import build_data
from tdbn.train.config import DataConfig
from tdbn.train.loaders import Shard, ShardedBatchSampler, TensorBatches, fixed_subset


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # a random augmentation drawn per batch
    return x + torch.randint(0, 100, (x.shape[0], 1), generator=g, device=x.device)


def _loader(world: int, rank: int, batch: int) -> TensorBatches:
    data = torch.arange(50).view(50, 1) * 1000
    return TensorBatches(data, torch.arange(50), batch_size=batch, shuffle=True, seed=7, shard=Shard(rank, world),
                         augment=_shift, transform=lambda x: x)


def test_two_shards_make_the_global_batches_of_one_process():
    for epoch in (0, 3):
        single = _loader(1, 0, 8)
        single.set_epoch(epoch)
        shards = [_loader(2, r, 4) for r in range(2)]
        for s in shards:
            s.set_epoch(epoch)
        assert len(single) == len(shards[0]) == 6  # 50 // 8, the last incomplete batch dropped
        for (x, y), (x0, y0), (x1, y1) in zip(single, *shards):
            assert torch.equal(torch.sort(y).values, torch.sort(torch.cat([y0, y1])).values)
            # same augmentation whatever the number of processes
            assert torch.equal(torch.sort(x.flatten()).values, torch.sort(torch.cat([x0, x1]).flatten()).values)


def test_order_depends_only_on_seed_and_epoch():
    a, b = _loader(1, 0, 10), _loader(1, 0, 10)
    a.set_epoch(2)
    list(b)  # b has been iterated before: its state must not matter
    b.set_epoch(2)
    assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))
    b.set_epoch(3)
    assert not all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))


def test_evaluation_shards_cover_every_sample_once():
    seen = []
    for rank in range(3):
        sampler = ShardedBatchSampler(10, batch_size=3, shuffle=False, shard=Shard(rank, 3))
        seen += [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(10))


def test_keyed_sampler_yields_epoch_seeds():
    sampler = ShardedBatchSampler(8, batch_size=4, shuffle=True, seed=1, keyed=True)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and all(isinstance(k, tuple) and len(k) == 2 for k in first[0])


def test_fixed_subset_is_stable():
    assert fixed_subset(10, None) is None and fixed_subset(10, 20) is None
    a = fixed_subset(1000, 50)
    assert torch.equal(a, fixed_subset(1000, 50)) and len(a.unique()) == 50


def test_digits_split_and_bundle():
    values, labels = load_digit_arrays()
    assert values.shape == (1797, 8, 8) and values.max() == 16 and sorted(set(labels.tolist())) == list(range(10))
    train, test = Digits(train=True), Digits(train=False)
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert torch.bincount(test.labels).min() >= 27  # every class is tested
    bundle = build_data(DataConfig(), batch_size=32, timesteps=2, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size, bundle.events) == (10, 1, 8, False)
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(torch.cat([b for b, _ in bundle.train]).mean())) < 0.1  # normalized with train statistics
