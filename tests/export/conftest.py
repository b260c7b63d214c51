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
    """ResNet-19 (width 1/16, T = 2) trained on the 1,437 training digits, 4 epochs of batch 16: about 90 % on the
    360 test digits (checked by ``all_test_digits``), so that most predictions are clear decisions, not near-ties that
    another CPU's float order could flip. Tens of seconds on one core."""
    return _train(tmp_path_factory, "optim.epochs=4", "optim.batch_size=16")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run of one epoch on 64 digits (32 test digits): for the command-line tests."""
    return _train(tmp_path_factory, "optim.epochs=1", "data.train_limit=64", "data.test_limit=32")


@pytest.fixture(scope="session")
def all_test_digits(trained_run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [360, 1, 8, 8] normalized as in training, labels [360])``: the whole digits test split, on which
    ``trained_run`` is checked to be well trained (the claims made about it would mean little otherwise)."""
    import tdbn
    from tdbn.data.digits import Digits

    opts = tdbn.saved_config(trained_run).data.options
    test = Digits(train=False)
    x, y = (test.images.float() / 255 - opts["mean"][0]) / opts["std"][0], test.labels
    with torch.no_grad():
        acc = (tdbn.load(trained_run)(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.8, f"the export tests' network is only {acc:.1%} accurate on the test digits: train it longer"
    return x, y


@pytest.fixture(scope="session")
def test_digits(all_test_digits) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [100, 1, 8, 8] normalized as in training, labels [100])``: the first 100 test digits."""
    x, y = all_test_digits
    return x[:N_IMAGES], y[:N_IMAGES]
