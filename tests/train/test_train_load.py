"""``tdbn.load``: one line from a run folder or checkpoint file to the trained model, the same one tdbn eval runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import tdbn
from tdbn.cli import main
from tdbn.train import CheckpointError, evaluate_checkpoint, load_config, train
from tdbn.train.checkpoint import FORMAT, load_checkpoint
from tdbn.train.data import build_data
from tdbn_train_helpers import one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_v1.pt"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # float64: predictions are compared exactly across batch sizes (50 here, eval's own) and with the fused network;
    # in float32 another batch size or the folded scales round differently, and a potential within that rounding
    # of the threshold (on some CPU) flips a spike and a prediction
    folder = tmp_path_factory.mktemp("load") / "run"
    train(load_config(None, tiny(f"run_dir={folder}", "optim.epochs=1", "dtype=float64")), log=lambda s: None)
    return folder


def _accuracy(model: torch.nn.Module, path: Path) -> tuple[float, torch.Tensor]:
    cfg = tdbn.saved_config(path)
    data = build_data(cfg.data, batch_size=50, timesteps=cfg.model.timesteps, seed=cfg.seed, train=False)
    preds, hits, n = [], 0, 0
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for x, y in data.test:
            p = model(x.to(dtype)).argmax(1)
            preds.append(p)
            hits += int((p == y).sum())
            n += len(y)
    return hits / n, torch.cat(preds)


def test_load_folder_and_file_give_the_accuracy_of_tdbn_eval(run, capsys):
    ref = evaluate_checkpoint(run)
    from_folder = tdbn.load(run)
    from_file = tdbn.load(run / "checkpoint.pt")
    assert not from_folder.training and not from_file.training
    acc_folder, preds = _accuracy(from_folder, run)
    acc_file, preds_file = _accuracy(from_file, run / "checkpoint.pt")
    assert acc_folder == acc_file == ref["top1"] and ref["samples"] == 64
    assert torch.equal(preds, preds_file)
    fused = tdbn.load(run, fuse=True)
    assert not any(isinstance(m, (tdbn.TdBatchNorm1d, tdbn.TdBatchNorm2d)) for m in fused.modules())
    acc_fused, preds_fused = _accuracy(fused, run)
    assert torch.equal(preds_fused, preds) and acc_fused == ref["top1"]
    assert main(["eval", str(run), "--quiet", "--out", str(run.parent / "e.json")]) == 0
    assert f"top-1 {100 * acc_folder:.2f}%" in capsys.readouterr().out


def test_checkpoint_stores_the_model_constructor_as_plain_data(run):
    ckpt = load_checkpoint(run)
    assert ckpt["format"] == FORMAT and ckpt["model_name"] == "resnet19"
    kwargs = ckpt["model_kwargs"]
    assert (kwargs["num_classes"], kwargs["in_channels"], kwargs["input_size"], kwargs["width"]) == (10, 1, 8, 0.0625)
    assert ckpt["input"] == {"events": False, "shape": [1, 8, 8]}
    model = tdbn.models.create(ckpt["model_name"], **kwargs)  # no tdbn.train needed to rebuild it
    model.load_state_dict(ckpt["model"])
    cfg = tdbn.saved_config(run)
    assert cfg.model.width == 0.0625 and len(cfg.data.options["mean"]) == 1  # normalization recorded


def test_loaded_model_says_what_input_it_needs(run):
    model = tdbn.load(run)
    with pytest.raises(ValueError, match=r"uint8 values.*x.float\(\) / 255.*data.options.mean"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"28x28 inputs, but this model was built for 8x8.*input_size"):
        model(torch.zeros(2, 1, 28, 28))


def test_a_checkpoint_of_the_previous_format_still_loads(tmp_path):
    """A checkpoint written by the code before model_name/model_kwargs/digest existed (tests/fixtures)."""
    old = tmp_path / "run"
    old.mkdir()
    shutil.copy(LEGACY, old / "checkpoint.pt")
    assert load_checkpoint(old)["format"] == "tdbn-train-checkpoint/1"
    result = evaluate_checkpoint(old)
    assert result["samples"] == 64 and round(100 * result["top1"], 2) == 10.94 and round(result["loss"], 4) == 2.3169
    fused = evaluate_checkpoint(old, fuse=True)
    assert fused["top1"] == result["top1"]
    model = tdbn.load(old / "checkpoint.pt")
    acc, _ = _accuracy(model, old / "checkpoint.pt")
    assert acc == result["top1"]


def test_load_of_a_damaged_checkpoint_names_the_file(run, tmp_path):
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bad.pt: corrupted checkpoint"):
        tdbn.load(tmp_path / "bad.pt")


def test_fuse_lives_in_tdbn_fusion_and_is_re_exported():
    import tdbn.fusion
    from tdbn.export import fuse

    assert tdbn.fuse is tdbn.fusion.fuse is fuse is tdbn.export.fuse
