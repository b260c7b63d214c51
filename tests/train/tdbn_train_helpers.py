"""Shared helpers of the training tests: a tiny configuration that trains in about a second."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

# a narrow ResNet-19 (8 channels) on a fixed subset of the embedded digits: 4 steps per epoch
TINY = [
    "model.width=0.0625", "model.timesteps=2", "data.train_limit=128", "data.test_limit=64",
    "optim.batch_size=32", "optim.epochs=2", "progress=false",
]
TIME_KEYS = {"elapsed_s", "epoch_s", "images_per_s", "test_images_per_s"}


def tiny(*extra: str) -> list[str]:
    return [*TINY, *extra]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def one_thread():
    """Train in one thread: the tiny test networks gain nothing from more, and on a busy shared CPU the
    spinning OpenMP threads of several processes slow each other down many times over."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def free_port() -> int:
    """A TCP port on this machine that was free a moment ago (for a process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
