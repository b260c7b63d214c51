"""Mixed precision: bf16 autocast on CPU; fp16 autocast with a gradient scaler whose state is checkpointed."""

from __future__ import annotations

import math

import pytest
import torch

from tdbn.train import load_checkpoint, load_config, train
from tdbn.train.amp import Precision, resolve_amp
from tdbn_train_helpers import one_thread, metrics, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_per_device():
    assert resolve_amp(None, torch.device("cpu")) == "fp32"
    assert resolve_amp(None, torch.device("cuda")) == "fp16"
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", torch.device("cpu"))


def test_bf16_autocast_runs_the_model_in_bf16():
    from tdbn import models

    model = models.create("resnet19", num_classes=10, in_channels=1, input_size=8, width=0.0625, timesteps=2)
    with Precision.create("bf16", torch.device("cpu")).autocast():
        out = model(torch.randn(4, 1, 8, 8))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_checkpoints_the_scaler(amp, tmp_path):
    run = tmp_path / amp
    final = train(load_config(None, tiny(f"amp={amp}", f"run_dir={run}", "optim.epochs=1",
                                                     "data.train_limit=64", "data.test_limit=32")), log=lambda s: None)
    assert math.isfinite(final["train_loss"]) and final["test_top1"] > 0.0
    ckpt = load_checkpoint(run)
    assert ckpt["config"]["amp"] == amp
    if amp == "fp16":
        assert ckpt["scaler"]["scale"] > 0  # an active scaler's state
    else:
        assert ckpt["scaler"] == {}  # bf16 needs no scaler
    assert len(metrics(run)) == 1
