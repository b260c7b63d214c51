"""Mixed precision: bf16 autocast on CPU; fp16 autocast with a gradient scaler whose state is checkpointed; ``auto``
picks bf16 only where the CPU computes it natively, and bf16 asked for on a CPU without it says so once."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from tdbn.train import load_checkpoint, load_config, train
from tdbn.train import amp as amp_module
from tdbn.train.amp import Precision, cpu_bf16_native, precision_note, resolve_amp
from tdbn_train_helpers import one_thread, metrics, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_per_device():
    assert resolve_amp(None, torch.device("cpu")) == "fp32"
    assert resolve_amp(None, torch.device("cuda")) == "fp16"
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", torch.device("cpu"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_where_the_cpu_has_it(native, monkeypatch):
    monkeypatch.setattr(amp_module, "cpu_bf16_native", lambda: native)
    used = resolve_amp("auto", torch.device("cpu"))
    assert used == ("bf16" if native else "fp32")
    line, warning = precision_note("auto", used, torch.device("cpu"))
    assert warning is None
    assert line == ("precision: bf16 (amp=auto: native bf16 on this CPU)" if native
                    else "precision: fp32 (amp=auto: no native bf16 on this CPU (neither AVX512-BF16 nor AMX))")
    # asked for explicitly: bf16 runs as asked, with a warning only where it is not native
    line, warning = precision_note("bf16", "bf16", torch.device("cpu"))
    assert line.startswith("precision: bf16")
    assert (warning is None) == native
    if not native:
        assert "slow reference path" in warning and "amp=auto" in warning and "amp=fp32" in warning


def test_native_bf16_answer_matches_onednn():
    assert cpu_bf16_native() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_bf16_autocast_runs_the_model_in_bf16():
    from tdbn import models

    model = models.create("resnet19", num_classes=10, in_channels=1, input_size=8, width=0.0625, timesteps=2)
    with Precision.create("bf16", torch.device("cpu")).autocast():
        out = model(torch.randn(4, 1, 8, 8))
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_a_run_logs_its_precision_and_warns_once_without_native_bf16(native, tmp_path, monkeypatch):
    monkeypatch.setattr(amp_module, "cpu_bf16_native", lambda: native)
    lines: list[str] = []
    cfg = load_config(None, tiny("amp=bf16", f"run_dir={tmp_path / 'run'}", "optim.epochs=1", "data.train_limit=32",
                                 "data.test_limit=16"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, log=lines.append)
    ours = [w for w in caught if "native bf16" in str(w.message)]
    assert len(ours) == (0 if native else 1)
    assert [line for line in lines if line.startswith("precision:")] == (
        ["precision: bf16"] if native else ["precision: bf16 (no native bf16 on this CPU: slow, see the warning)"])
    assert load_checkpoint(tmp_path / "run")["config"]["amp"] == "bf16"


def test_auto_is_recorded_as_the_precision_that_ran(tmp_path, monkeypatch):
    monkeypatch.setattr(amp_module, "cpu_bf16_native", lambda: False)
    lines: list[str] = []
    train(load_config(None, tiny("amp=auto", f"run_dir={tmp_path / 'run'}", "optim.epochs=1", "data.train_limit=32",
                                 "data.test_limit=16")), log=lines.append)
    assert any(line.startswith("precision: fp32 (amp=auto: no native bf16") for line in lines)
    assert load_checkpoint(tmp_path / "run")["config"]["amp"] == "fp32"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.filterwarnings("ignore:amp=bf16. this CPU has no native bf16")
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
