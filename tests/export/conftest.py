"""A small trained residual network shared by the export tests (consumers, integer deployment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdbn.cli import main

N_IMAGES = 100


def _train(tmp_path_factory, *overrides: str) -> Path:
    """The run folder of ``tdbn train`` of a ResNet-19 at width 1/16 on the embedded digits, with ``overrides``."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *overrides, "model.width=0.0625", f"out_dir={out}", "progress=false"]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """ResNet-19 (width 1/16, T = 2) trained on 800 digits, 2 epochs of batch 16 (about 43 % on the test split):
    seconds on one core."""
    return _train(tmp_path_factory, "optim.epochs=2", "data.train_limit=800", "optim.batch_size=16")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run of one epoch on 64 digits (32 test digits): for the command-line tests."""
    return _train(tmp_path_factory, "optim.epochs=1", "data.train_limit=64", "data.test_limit=32")


@pytest.fixture(scope="session")
def test_digits(trained_run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [100, 1, 8, 8] normalized as in training, labels [100])`` from the digits test split."""
    import tdbn
    from tdbn.data.digits import Digits

    opts = tdbn.saved_config(trained_run).data.options
    test = Digits(train=False)
    x = test.images[:N_IMAGES].float() / 255
    return (x - opts["mean"][0]) / opts["std"][0], test.labels[:N_IMAGES]
