"""Fault injection on tiny runs: every fault is caught where it enters, with a message naming it, nothing saved lost.

Damaged checkpoints (20 single-byte flips), NaN inputs and gradients at a given step, a full disk, killed writes,
resumption edge cases, damaged data files, bad options, export mistakes and partial CIFAR10-DVS copies.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import tdbn
import tdbn.train.checkpoint as checkpoint_module
import tdbn.train.loaders as loaders
import tdbn.train.run as run_module
from tdbn.cli import main
from tdbn.data import CIFAR10_DVS_CLASSES, CIFAR10DVS, DataNotFoundError, load_split
from tdbn.train import CheckpointError, CheckpointWriteError, NonFiniteError, load_checkpoint, load_config, train
from tdbn.train.checkpoint import non_finite_tensors
from tdbn.train.restore import restore
from tdbn_train_helpers import metrics, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished 2-epoch run: checkpoint.pt (epoch 2) and checkpoint.prev.pt (epoch 1)."""
    run = tmp_path_factory.mktemp("faults") / "run"
    train(load_config(None, tiny(f"run_dir={run}")), **QUIET)
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# --- damaged checkpoints -------------------------------------------------------------------------------------------


def test_every_flipped_byte_is_caught_naming_the_file(two_epochs, tmp_path, capsys):
    data = (two_epochs / "checkpoint.pt").read_bytes()
    offsets = random.Random(0).sample(range(len(data)), 20)
    bad = tmp_path / "checkpoint.pt"
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=r"checkpoint.pt: (corrupted|truncated)") as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value), offset
        with pytest.raises(CheckpointError):
            restore(bad)  # tdbn.load, tdbn eval, export and analyze all load through it
    assert main(["eval", str(tmp_path), "--quiet"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_resume_falls_back_to_the_previous_good_checkpoint(two_epochs, tmp_path, capsys):
    run = _copy(two_epochs, tmp_path / "run")
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 3] ^= 0x40
    (run / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint.prev.pt may be intact"):
        load_checkpoint(run)
    with pytest.warns(UserWarning) as warned:
        assert main(["train", "--resume", str(run), "optim.epochs=3"]) == 0  # the damaged file never becomes prev
    assert [str(w.message) for w in warned if "resuming from the previous checkpoint" in str(w.message)]
    assert [str(w.message) for w in warned if "fails its digest check; keeping" in str(w.message)]
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]
    assert load_checkpoint(run)["epoch"] == 3 and load_checkpoint(run / "checkpoint.prev.pt")["epoch"] == 2


def test_old_torch_load_still_reads_a_verified_checkpoint(two_epochs):
    raw = torch.load(two_epochs / "checkpoint.pt", weights_only=True)  # the digest line does not get in the way
    assert raw["epoch"] == 2 and raw["model_name"] == "resnet19"


# --- non-finite values -------------------------------------------------------------------------------------------


def _nan_input_at(monkeypatch, *, epoch: int, step: int) -> None:
    original = loaders.TensorBatches.__iter__

    def poisoned(self):
        for i, (x, y) in enumerate(original(self)):
            if self.shuffle and self.epoch == epoch - 1 and i == step - 1:
                x = x.clone()
                x.view(-1)[7] = float("nan")  # one pixel
            yield x, y

    monkeypatch.setattr(loaders.TensorBatches, "__iter__", poisoned)


def test_nan_input_stops_at_that_step_with_finite_saved_state(tmp_path, monkeypatch, capsys):
    _nan_input_at(monkeypatch, epoch=2, step=3)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"non-finite input at epoch 2, iteration 3; training stopped before "
                                              r"applying it, the last good checkpoint .*checkpoint.pt \(epoch 1\)"):
        train(load_config(None, tiny(f"run_dir={run}")), **QUIET)
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 1 and non_finite_tensors(ckpt) == []
    model = tdbn.load(run)
    assert all(bool(torch.isfinite(b).all()) for b in model.buffers() if b.is_floating_point())
    assert main(["train", *tiny(f"run_dir={tmp_path / 'cli'}")]) == 2
    assert "non-finite input at epoch 2, iteration 3" in capsys.readouterr().err


def test_nan_gradient_names_the_parameter_and_leaves_the_statistics(tmp_path, monkeypatch):
    made = {}
    original = run_module.create_model

    def with_nan_grad(name, kwargs, **kw):
        model = original(name, kwargs, **kw)
        calls = {"n": 0}

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 6 else grad  # epoch 2, iteration 2 (4 steps per epoch)

        model.decoder.module.weight.register_hook(hook)
        made["model"] = model
        return model

    monkeypatch.setattr(run_module, "create_model", with_nan_grad)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient of decoder.module.weight at epoch 2, iteration 2"):
        train(load_config(None, tiny(f"run_dir={tmp_path / 'run'}")), **QUIET)
    model = made["model"]
    assert non_finite_tensors(model.state_dict()) == []  # the step was not applied
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_evaluation_refuses_non_finite_inputs(two_epochs, monkeypatch):
    original = loaders.TensorBatches.__iter__

    def poisoned(self):
        for x, y in original(self):
            x = x.clone()
            x.view(-1)[0] = float("inf")
            yield x, y

    monkeypatch.setattr(loaders.TensorBatches, "__iter__", poisoned)
    from tdbn.train import TrainingError, evaluate_checkpoint

    with pytest.raises(TrainingError, match=r"eval: non-finite input .* in test batch 1"):
        evaluate_checkpoint(two_epochs)


# --- writes ------------------------------------------------------------------------------------------------------


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_fsync = checkpoint_module.os.fsync
    writes = {"n": 0}

    def full_disk(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            writes["n"] += 1
            if writes["n"] == 2:  # the second checkpoint file (epoch 2)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", full_disk)
    assert main(["train", *tiny(f"run_dir={run}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tdbn train: error: no space left on device while writing {run / 'checkpoint.pt'}; "
                   f"the previous checkpoint {run / 'checkpoint.pt'} is intact")
    monkeypatch.undo()
    assert load_checkpoint(run)["epoch"] == 1
    assert not list(run.glob(".*tmp*"))  # no partial file left


def test_permission_error_while_saving_is_one_line(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint_module, "open", denied, raising=False)
    with pytest.raises(CheckpointWriteError, match=r"permission denied while writing .*c.pt; no earlier checkpoint"):
        checkpoint_module.save_checkpoint(tmp_path / "c.pt", {"model": {}, "format": "x"})


def test_refuses_to_write_a_non_finite_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"not written: non-finite values in model.w"):
        checkpoint_module.save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.tensor([1.0, math.nan])}})
    assert not (tmp_path / "c.pt").exists()


def test_unwritable_out_dir_is_refused_before_loading_data(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "mnist", f"data.root={tmp_path / 'no-data'}", f"out_dir={blocker / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the run folder" in err and "out_dir=PATH" in err and "no-data" not in err


def test_leftover_temporary_files_are_removed_at_the_next_start(two_epochs, tmp_path):
    run = _copy(two_epochs, tmp_path / "run")
    leftover = run / ".checkpoint.pt.tmp-99999"
    leftover.write_bytes(b"")
    assert main(["train", "--resume", str(run), "optim.epochs=3"]) == 0
    assert not leftover.exists()


# --- resuming ----------------------------------------------------------------------------------------------------


def test_run_killed_before_its_first_checkpoint_can_be_resumed(two_epochs, tmp_path, capsys):
    run = _copy(two_epochs, tmp_path / "run")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).unlink()
    (run / ".checkpoint.pt.tmp-4242").write_bytes(b"")  # killed during the first write
    assert main(["train", "--resume", str(run)]) == 0
    assert "has no checkpoint yet" in capsys.readouterr().out
    assert [r["epoch"] for r in metrics(run)] == [1, 2] and load_checkpoint(run)["epoch"] == 2
    assert main(["train", *tiny(f"run_dir={run}")]) == 2  # a new run into it is refused, naming --resume
    assert f"--resume {run}" in capsys.readouterr().err


def test_more_epochs_recompute_the_schedule_and_fewer_are_refused(two_epochs, tmp_path, capsys):
    run = _copy(two_epochs, tmp_path / "run")
    assert main(["train", "--resume", str(run), "optim.epochs=4"]) == 0
    lrs = [r["lr"] for r in metrics(run)]
    # epochs 3 and 4 follow the cosine of a 4-epoch run (0.1 * (1 + cos(pi * e / 4)) / 2), not the old end (0)
    assert lrs[2] == pytest.approx(0.05) and lrs[3] == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "optim.epochs=3"]) == 2
    assert "has completed 4 epochs and optim.epochs=3" in capsys.readouterr().err
    assert main(["train", *tiny("optim.lr=0.5"), "--resume", str(run)]) == 2
    assert "only " in capsys.readouterr().err  # which keys may change is listed


# --- data files ----------------------------------------------------------------------------------------------------


def _mnist_npz(path: Path, *, labels_from: int = 0) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             y_train=labels_from + np.arange(64) % 10, x_test=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
             y_test=labels_from + np.arange(32) % 10)
    return path


MNIST_TINY = ["model.width=0.0625", "model.timesteps=2", "optim.epochs=1", "optim.batch_size=32", "progress=false"]


@pytest.mark.parametrize("damage", ["truncated", "text", "labels"])
def test_damaged_data_files_raise_data_format_errors(tmp_path, capsys, damage):
    npz = tmp_path / "x.npz"
    if damage == "truncated":
        _mnist_npz(tmp_path / "full.npz")
        npz.write_bytes((tmp_path / "full.npz").read_bytes()[:5000])
        (tmp_path / "full.npz").unlink()
    elif damage == "text":
        npz.write_text("this is not an npz file\n" * 20)
    else:
        _mnist_npz(npz, labels_from=5)
    rc = main(["train", "mnist", f"data.root={npz}", *MNIST_TINY, f"out_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2 and str(npz) in err and "Traceback" not in err and "pickle" not in err
    if damage == "labels":
        assert "labels [10, 11, 12, 13, 14] outside 0..9" in err
    else:
        assert "not a readable .npz archive" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_relative_data_path_is_stored_absolute(tmp_path, monkeypatch, capsys):
    (tmp_path / "work" / "data").mkdir(parents=True)
    _mnist_npz(tmp_path / "work" / "data" / "m.npz")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "mnist", "data.root=data/m.npz", *MNIST_TINY, "run_dir=run"]) == 0
    saved = json.loads((tmp_path / "work" / "run" / "config.json").read_text())
    assert saved["data"]["root"] == str(tmp_path / "work" / "data" / "m.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(tmp_path / "work" / "run"), "--quiet"]) == 0
    (tmp_path / "work" / "data" / "m.npz").rename(tmp_path / "work" / "data" / "moved.npz")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "work" / "run"), "--quiet", "--force"]) == 2
    assert "--data ROOT" in capsys.readouterr().err


# --- options -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", ["0", "-1"])
def test_model_width_out_of_range_is_rejected(width, capsys):
    assert main(["train", *tiny(f"model.width={width}")]) == 2
    assert "'model.width' must be in (0, 64]" in capsys.readouterr().err


def test_eval_limit_zero_is_rejected(two_epochs, capsys):
    assert main(["eval", str(two_epochs), "--limit", "0"]) == 2
    assert "the test limit must be >= 1" in capsys.readouterr().err


def test_input_size_mismatches_name_the_size_and_the_option(tmp_path, capsys):
    npz = _mnist_npz(tmp_path / "m.npz")
    assert main(["train", "mnist", f"data.root={npz}", *MNIST_TINY, "model.name=resnet19",
                 "model.options.input_size=32", f"out_dir={tmp_path / 'runs'}"]) == 2
    assert "model.options.input_size=32, but the mnist inputs are 28x28" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "mnist", f"data.root={npz}", *MNIST_TINY, "model.name=resnet19", f"run_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "m.nir"), "--format", "nir", "--input-size", "32"]) == 2
    assert "built for 28x28 inputs" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"32x32 inputs, but this model was built for 28x28"):
        tdbn.load(run)(torch.zeros(1, 1, 32, 32))


def test_export_suffix_must_match_the_format(two_epochs, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(two_epochs), str(out), "--format", "nir"]) == 2
    assert "the suffix .onnx says ONNX but --format is nir" in capsys.readouterr().err and not out.exists()


# --- CIFAR10-DVS partial copies -------------------------------------------------------------------------------------


def test_cifar10_dvs_partial_copies(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "data"))
    from tdbn_data_writers import random_events, write_aedat2

    split = load_split()
    present = CIFAR10_DVS_CLASSES[:3]
    for k, cls in enumerate(present):
        (tmp_path / cls).mkdir()
        for index in split["train"][cls][:2] + split["test"][cls][:1]:
            t, x, y, p = random_events(500, size=128, duration_us=100_000, seed=k * 1000 + index)
            write_aedat2(tmp_path / cls / f"cifar10_{cls}_{index}.aedat", x, y, p, t)
    with pytest.raises(DataNotFoundError, match=r"(?s)missing class folder\(s\): cat, deer, .*require_complete=False"):
        CIFAR10DVS(tmp_path)
    with pytest.warns(UserWarning, match=r"partial copy: 6 of 9000 train samples; missing class folder\(s\): cat, deer"):
        train_ds = CIFAR10DVS(tmp_path, require_complete=False)
    assert len(train_ds) == 6 and sorted(set(train_ds.labels)) == [0, 1, 2] and len(train_ds.classes) == 10
    for cls in present:  # only training files left: the test split is empty
        for f in (tmp_path / cls).glob("*.aedat"):
            if int(f.stem.rsplit("_", 1)[1]) in split["test"][cls]:
                f.unlink()
    with pytest.raises(DataNotFoundError, match=r"none of the 1000 files of the test split is present"):
        CIFAR10DVS(tmp_path, train=False, require_complete=False)
