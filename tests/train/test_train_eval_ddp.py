"""Evaluation across processes: every test sample counted once, the last partial batch included, as in 1 process."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tdbn import models
from tdbn.data.digits import Digits
from tdbn.train import evaluate
from tdbn.train.distributed import Context, setup, teardown
from tdbn.train.loaders import Shard, TensorBatches, fixed_subset
from tdbn_train_helpers import free_port, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

N, BATCH = 359, 48  # 180 + 179 samples on 2 processes: batches of 48, 48, 48, 36 and 48, 48, 48, 35


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_the_test_shards_hold_every_sample_once(world):
    seen = []
    for rank in range(world):
        loader = TensorBatches(torch.zeros(N, 1), torch.arange(N), batch_size=BATCH, shuffle=False,
                               shard=Shard(rank, world))
        labels = [y for _, y in loader]
        assert len(labels) == len(loader)
        seen += torch.cat(labels).tolist()
    assert sorted(seen) == list(range(N))


def _setup():
    """A float64 ResNet-19 (8 channels, random weights) and the first N digits test images of this process."""
    torch.manual_seed(0)
    model = models.create("resnet19", num_classes=10, in_channels=1, input_size=8, width=0.0625, timesteps=2)
    model.double()
    ds = Digits(train=False)
    index = fixed_subset(len(ds.labels), N)
    return model, ds, index


def _evaluate(shard: Shard, ctx: Context) -> dict:
    model, ds, index = _setup()
    loader = TensorBatches(ds.images[index], ds.labels[index], batch_size=BATCH, shuffle=False, shard=shard,
                           transform=lambda x: (x.double() / 255 - 0.3) / 0.4)
    return evaluate(model, loader, ctx)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = setup("cpu")
    try:
        result = _evaluate(ctx.shard, ctx)
        if ctx.is_main:
            torch.save(result, out)
    finally:
        teardown(ctx)


def test_two_processes_evaluate_exactly_as_one(tmp_path):
    one = _evaluate(Shard(), Context(Shard(), torch.device("cpu")))
    assert one["samples"] == N
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    assert two["samples"] == N
    assert two["top1"] == one["top1"] and two["top5"] == one["top5"]  # the same hits, counted once
    assert abs(two["loss"] - one["loss"]) < 1e-12 and abs(two["firing_rate"] - one["firing_rate"]) < 1e-12
