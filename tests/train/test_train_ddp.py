"""Data-parallel training: 2 gloo processes with half the batch each == 1 process with the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tdbn.train import config_to_dict, config_from_dict, load_config, train
from tdbn_train_helpers import free_port, one_thread, metrics, model_state, tiny, without_times  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# 96 samples, global batch 32: 3 steps per epoch, 2 epochs. float64: in float32 the two runs differ by rounding
# (~1e-7, different reduction order), and over a few steps a potential that rounding moves across the threshold
# flips a spike, which changes later updates by far more than 1e-5; in float64 that does not happen.
ARGS = tiny("data.train_limit=96", "optim.lr=0.2", "device=cpu", "dtype=float64")


def _worker(rank: int, world: int, port: int, cfg: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(config_from_dict(cfg), log=lambda s: None)


@pytest.mark.parametrize("loss", ["ce", "tet"])  # TET: the per-step scores through DistributedDataParallel
def test_two_processes_half_batch_equal_one_process_whole_batch(tmp_path, loss):
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*ARGS, f"optim.loss={loss}", "optim.tet_lambda=0.1"]
    train(load_config(None, [*args, "optim.batch_size=32", f"run_dir={one}"]), log=lambda s: None)
    cfg = config_to_dict(load_config(None, [*args, "optim.batch_size=16", f"run_dir={two}"]))
    mp.spawn(_worker, args=(2, free_port(), cfg), nprocs=2, join=True)

    assert torch.load(two / "checkpoint.pt", weights_only=True)["world_size"] == 2
    a, b = model_state(one), model_state(two)
    for k in a:  # parameters and tdBN running statistics
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-9, msg=k)
    ma, mb = without_times(metrics(one)), without_times(metrics(two))
    for ra, rb in zip(ma, mb, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert abs(ra[k] - rb[k]) < 1e-9, k
