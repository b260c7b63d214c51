"""A small trained residual network shared by the export tests (consumers, integer deployment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdbn.cli import main

N_IMAGES = 100


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """``tdbn train`` of a ResNet-19 (width 1/16, T = 2) on 800 digits, 2 epochs of batch 16 (about 43 % on the test
    split): seconds on one core."""
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", "optim.epochs=2", "data.train_limit=800", "optim.batch_size=16", "model.width=0.0625",
                 f"out_dir={out}", "progress=false"])
    assert code == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="session")
def test_digits(trained_run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [100, 1, 8, 8] normalized as in training, labels [100])`` from the digits test split."""
    import tdbn
    from tdbn.data.digits import Digits

    opts = tdbn.saved_config(trained_run).data.options
    test = Digits(train=False)
    x = test.images[:N_IMAGES].float() / 255
    return (x - opts["mean"][0]) / opts["std"][0], test.labels[:N_IMAGES]
