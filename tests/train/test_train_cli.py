"""The ``tdbn`` command end to end on a tiny run: train, files of the run folder, eval (plain and fused)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tdbn import __version__
from tdbn.cli import main
from tdbn.train import preset_names
from tdbn_train_helpers import one_thread, metrics, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

METRIC_KEYS = {"epoch", "lr", "train_loss", "train_top1", "train_top5", "train_firing_rate", "images_per_s",
               "test_loss", "test_top1", "test_top5", "test_firing_rate", "elapsed_s"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # float64: eval compares the fused network with the plain one exactly; in float32, folding the scales rounds
    # the weights, and on some CPU a potential within that rounding of the threshold flips a spike and a prediction
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *tiny(f"run_dir={run}", "optim.lr=0.2", "dtype=float64"), "--device", "cpu"]) == 0
    return run


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert name in out


def test_run_folder_holds_resolved_config_metrics_and_checkpoint(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg == json.loads((run_dir / "config.json").read_text())
    assert cfg["model"]["width"] == 0.0625 and cfg["optim"]["lr"] == 0.2
    assert cfg["device"] == "cpu" and cfg["amp"] == "fp32" and cfg["run_dir"] == str(run_dir)  # resolved
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert METRIC_KEYS <= set(r)
        assert 0.0 < r["train_firing_rate"] < 1.0 and 0.0 <= r["test_top1"] <= r["test_top5"] <= 1.0
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"] == cfg and ckpt["metrics"] == records
    assert ckpt["version"]["tdbn"] == __version__
    assert ckpt["neuron"]["tau"] == 0.25 and ckpt["neuron"]["v_th"] == 0.5
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        assert key in ckpt


def test_eval_plain_and_fused_agree(run_dir, capsys):
    assert main(["eval", str(run_dir), "--quiet"]) == 0
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--fuse", "--quiet"]) == 0
    plain = json.loads((run_dir / "eval.json").read_text())
    fused = json.loads((run_dir / "eval-fused.json").read_text())
    assert plain["samples"] == fused["samples"] == 64 and fused["fused"]
    assert plain["top1"] == pytest.approx(metrics(run_dir)[-1]["test_top1"])
    assert fused["top1"] == pytest.approx(plain["top1"]) and fused["top5"] == pytest.approx(plain["top5"])
    assert "top-1" in capsys.readouterr().out


def test_existing_run_folder_is_never_overwritten(run_dir, capsys):
    before = (run_dir / "metrics.jsonl").read_text()
    assert main(["train", *tiny(f"run_dir={run_dir}")]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "optim.lrate=1", f"out_dir={tmp_path}"]) == 2
    assert "unknown config key 'optim.lrate'" in capsys.readouterr().err
    assert main(["train", "no_such_preset"]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_tensorboard_is_an_optional_extra(tmp_path, capsys):
    import importlib.util

    run = tmp_path / "tb"
    code = main(["train", *tiny(f"run_dir={run}", "optim.epochs=1", "data.train_limit=32", "tensorboard=true")])
    if importlib.util.find_spec("tensorboard") is None:
        assert code == 2 and "pip install 'tdbn[tensorboard]'" in capsys.readouterr().err
        assert not run.exists()  # stopped before writing anything
    else:
        assert code == 0 and any((run / "tensorboard").iterdir())
