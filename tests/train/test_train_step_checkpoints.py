"""Step checkpoints: written mid-epoch, verified and rotated like the others, and resumed exactly (1 process)."""

from __future__ import annotations

import pytest
import torch

import tdbn.train.run as run_module
from tdbn.cli import main
from tdbn.train import CheckpointError, TrainingError, load_checkpoint, load_config, train
from tdbn.train.loaders import TensorBatches
from tdbn_train_helpers import metrics, model_state, one_thread, tiny, without_times  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"log": lambda s: None}
ARGS = tiny("optim.epochs=3", "optim.lr=0.2")  # 4 steps per epoch, float32


class Crash(Exception):
    """Stands for a process that dies right after a checkpoint was written."""


def _crash_after(monkeypatch, *, epoch: int, step: int) -> list[tuple[int, int]]:
    """Make the run die after writing the mid-epoch checkpoint at ``step`` of ``epoch`` (from 1); log all writes."""
    written = []
    original = run_module._Checkpoints.save

    def save(self, progress=None):
        original(self, progress)
        at = (self.epoch + 1, progress.step) if progress is not None else (self.epoch, 0)
        written.append(at)
        if at == (epoch, step):
            raise Crash

    monkeypatch.setattr(run_module._Checkpoints, "save", save)
    return written


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, without step checkpoints."""
    run = tmp_path_factory.mktemp("steps") / "ref"
    train(load_config(None, [*ARGS, f"run_dir={run}"]), **QUIET)
    return run


def test_mid_epoch_resume_is_bit_identical(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    written = _crash_after(monkeypatch, epoch=2, step=2)
    with pytest.raises(Crash):
        train(load_config(None, [*ARGS, "checkpoint_every_steps=3", f"run_dir={run}"]), **QUIET)
    # global steps 3 and 6 (epoch 1, step 3; epoch 2, step 2), and the end of epoch 1 between them
    assert written == [(1, 3), (1, 0), (2, 2)]
    ckpt = load_checkpoint(run)  # verified like every checkpoint
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2) and load_checkpoint(run / "checkpoint.prev.pt")["step"] == 0
    assert ckpt["ranks"][0]["progress"]["step"] == 2 and ckpt["ranks"][0]["generator"] is not None
    monkeypatch.undo()

    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming after epoch 1, at step 2 of epoch 2" in capsys.readouterr().out
    a, b = model_state(reference), model_state(run)
    assert a.keys() == b.keys()
    for k in a:  # fp32 parameters and running statistics, bit for bit
        assert torch.equal(a[k], b[k]), k
    assert without_times(metrics(run)) == without_times(metrics(reference))  # metrics of the whole epoch 2 too


def test_minutes_make_mid_epoch_checkpoints(tmp_path, monkeypatch):
    written = _crash_after(monkeypatch, epoch=0, step=0)  # never crashes; records the writes
    train(load_config(None, tiny("optim.epochs=1", "checkpoint_every_minutes=1e-9", f"run_dir={tmp_path / 'r'}")),
          **QUIET)
    assert written == [(1, 1), (1, 2), (1, 3), (1, 0)]  # after every step but the last, then the epoch's end


def test_a_mid_epoch_checkpoint_needs_the_same_number_of_processes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _crash_after(monkeypatch, epoch=1, step=2)
    with pytest.raises(Crash):
        train(load_config(None, tiny("checkpoint_every_steps=2", f"run_dir={run}")), **QUIET)
    monkeypatch.undo()
    ckpt = load_checkpoint(run)
    ckpt["world_size"] = 2  # as if written by 2 processes
    run_module.save_checkpoint(run / "checkpoint.pt", ckpt)
    with pytest.raises(TrainingError, match=r"written at step 2 of epoch 1 by 2 process\(es\); continue it with 2"):
        train(load_config(None, tiny(f"run_dir={run}")), resume=run, **QUIET)


@pytest.mark.parametrize("item", ["checkpoint_every_steps=0", "checkpoint_every_minutes=0",
                                  "checkpoint_every_steps=1.5"])
def test_bad_intervals_name_the_key(item):
    with pytest.raises(ValueError, match=item.split("=")[0]):
        load_config(None, [item])


def test_a_resumed_loader_continues_order_and_augmentation():
    images = torch.arange(40 * 4, dtype=torch.uint8).reshape(40, 1, 2, 2)

    def augment(x, g):  # draws from the epoch's generator, like the crop and flip of CIFAR-10
        return x + torch.randint(0, 3, x.shape, generator=g, dtype=torch.uint8)

    def loader():
        return TensorBatches(images, torch.zeros(40), batch_size=4, shuffle=True, seed=1, augment=augment)

    whole = loader()
    whole.set_epoch(3)
    expected = [x for x, _ in whole]
    first = loader()
    first.set_epoch(3)
    it = iter(first)
    for _ in range(4):
        next(it)
    state = first.generator_state()
    resumed = loader()
    resumed.set_epoch(3, start=4, generator_state=state)
    rest = [x for x, _ in resumed]
    assert len(rest) == len(expected) - 4
    for a, b in zip(rest, expected[4:], strict=True):
        assert torch.equal(a, b)
    assert len([x for x, _ in resumed]) == len(expected)  # the next pass starts at the beginning again


def test_damaged_mid_epoch_checkpoint_falls_back_to_the_previous(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _crash_after(monkeypatch, epoch=2, step=2)
    with pytest.raises(Crash):
        train(load_config(None, [*ARGS, "checkpoint_every_steps=2", f"run_dir={run}"]), **QUIET)
    monkeypatch.undo()
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (run / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(run)
    with pytest.warns(UserWarning) as warned:  # the damaged file never becomes prev
        assert main(["train", "--resume", str(run)]) == 0
    messages = [str(w.message) for w in warned]
    assert any("fails its digest check" in m for m in messages), messages
    assert any("resuming from the previous checkpoint" in m for m in messages), messages  # the end of epoch 1
    a, b = model_state(reference), model_state(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k
