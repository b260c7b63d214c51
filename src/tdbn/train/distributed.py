"""Data-parallel training across processes (``torchrun``): process group, sharding, reductions.

``torchrun --nproc_per_node=K -m tdbn.cli train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` then joins the group (NCCL on CUDA, gloo on CPU). Without
those variables everything runs in one process and the reductions below are no-ops.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainingError
from .loaders import Shard

__all__ = [
    "Context", "all_reduce_sum", "broadcast_object", "gather_objects", "resolve_device", "setup", "teardown",
    "torchrun_restart",
]


@dataclass(frozen=True)
class Context:
    """This process: its shard, its device, and whether it writes files and logs (rank 0)."""

    shard: Shard
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.shard.rank == 0

    @property
    def distributed(self) -> bool:
        return self.shard.world > 1


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``device``, or CUDA (this process's GPU) when present, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use device=cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def setup(device: str | None) -> Context:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _attempt_store(rank, world)
        if store is not None:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world)
        else:
            dist.init_process_group(backend, rank=rank, world_size=world)
    return Context(Shard(rank, world), dev)


def _attempt_store(rank: int, world: int) -> dist.Store | None:
    """Under torchrun's shared store: that store, with keys of this attempt only (None: the default ``env://``).

    torchrun (c10d rendezvous) hands its own store to the workers and keeps it across restarts, so the workers it
    restarts would read the addresses their killed predecessors published there and fail to connect. One node's
    restart count is the same in all its workers; on several nodes the counts differ between nodes (a node restarts
    healthy workers without counting), hence the error asking for a store per attempt there.
    """
    restart = torchrun_restart()
    if restart is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1 and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        raise TrainingError("torchrun --max-restarts on several nodes: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in "
                            "the environment of every torchrun launcher, so that each attempt gets a fresh store")
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world))
    return dist.PrefixStore(f"tdbn/attempt-{restart}", store)


def teardown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        # free what still holds the process group (a DDP wrapper kept by a reference cycle) while the group is
        # alive: destroyed at interpreter exit instead, gloo's threads can abort the process
        gc.collect()
        dist.barrier()  # leave together: a process that exits while another is mid-collective aborts it
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum of ``values`` over all processes (a copy; unchanged in one process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_object(obj, ctx: Context):
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, ctx: Context) -> list:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.shard.world
    dist.all_gather_object(out, obj)
    return out


def torchrun_restart() -> int | None:
    """How often torchrun has restarted this run's workers (0: the first start); None when not under torchrun."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    return int(value) if value is not None and value.isdigit() else None
