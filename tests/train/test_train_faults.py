"""Faults stop with a message naming the file or the step, and never destroy the last good checkpoint."""

from __future__ import annotations

import types

import pytest
import torch

import tdbn.train.checkpoint as checkpoint_module
import tdbn.train.engine as engine
from tdbn.cli import main
from tdbn.train import CheckpointError, NonFiniteLossError, load_checkpoint, load_config, train
from tdbn.train.checkpoint import save_checkpoint
from tdbn_train_helpers import one_thread, metrics, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("faults") / "run"
    train(load_config(None, tiny(f"run_dir={run}", "optim.epochs=1")), log=lambda s: None)
    return run


def test_truncated_checkpoint_names_the_file(good_run, tmp_path, capsys):
    data = (good_run / "checkpoint.pt").read_bytes()
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: truncated or corrupted"):
        load_checkpoint(broken / "checkpoint.pt")
    assert main(["train", "--resume", str(broken)]) == 2
    assert str(broken / "checkpoint.pt") in capsys.readouterr().err
    assert main(["eval", str(broken)]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err


def test_garbage_and_foreign_files_are_refused(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a tdbn training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_crash_during_write_keeps_the_previous_checkpoint(good_run, tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes((good_run / "checkpoint.pt").read_bytes())

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, {"anything": 1})
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_missing_data_folder_names_it(tmp_path, capsys):
    missing = tmp_path / "no-mnist-here"
    assert main(["train", "mnist", f"data.root={missing}", f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    assert not (tmp_path / "runs").exists()  # no run folder for a run that cannot start


def test_nan_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}

    def nan_on_sixth(output, target, **kw):  # 4 steps per epoch: epoch 2, iteration 2
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(output, target, **kw)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(engine, "F", types.SimpleNamespace(cross_entropy=nan_on_sixth))
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 2, iteration 2.*checkpoint.pt \(epoch 1\) is kept"):
        train(load_config(None, tiny(f"run_dir={run}", "optim.epochs=3", "eval_interval=5")), log=lambda s: None)
    assert load_checkpoint(run)["epoch"] == 1
    assert [r["epoch"] for r in metrics(run)] == [1]
