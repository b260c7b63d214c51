"""The MNIST and N-MNIST presets read the real data in ../shared/data and train a step on it."""

from __future__ import annotations

import math

import pytest
import torch

from tdbn.train import load_config, train
from tdbn.train.data import build_data
from tdbn_train_helpers import one_thread, metrics  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mnist_preset_trains_on_real_mnist(shared_mnist, tmp_path):
    cfg = load_config("mnist", [f"data.root={shared_mnist / 'mnist'}", "data.train_limit=64", "data.test_limit=64",
                                "optim.batch_size=32", "optim.epochs=1", "model.width=0.0625", "progress=false",
                                f"run_dir={tmp_path / 'run'}"])
    final = train(cfg, log=lambda s: None)
    assert math.isfinite(final["train_loss"]) and len(metrics(tmp_path / "run")) == 1


def test_nmnist_preset_feeds_time_first_event_frames(shared_nmnist):
    cfg = load_config("nmnist", [f"data.root={shared_nmnist / 'nmnist-small'}", "data.train_limit=20",
                                 "data.test_limit=10"])
    data = build_data(cfg.data, batch_size=10, timesteps=cfg.model.timesteps, seed=0)
    assert (data.num_classes, data.in_channels, data.input_size, data.events) == (10, 2, 34, True)
    assert data.train.num_samples == 20 and data.test.num_samples == 10
    x, y = next(iter(data.train))
    assert x.shape == (cfg.model.timesteps, 10, 2, 34, 34) and x.dtype == torch.float32
    assert x.sum() > 0 and y.max() <= 9  # real events, counted per polarity
