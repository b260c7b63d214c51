"""``tdbn export CHECKPOINT --format {nir,onnx} OUT`` on a checkpoint written by ``tdbn train``."""

from __future__ import annotations

from pathlib import Path

import torch

import tdbn
from tdbn.cli import main
from tdbn.export import from_nir


def _fused_from_checkpoint(run: Path) -> torch.nn.Module:
    from tdbn.train import config_from_dict, load_checkpoint
    from tdbn.train.build import build_model

    ckpt = load_checkpoint(run)
    model = build_model(config_from_dict(ckpt["config"]).model, num_classes=10, in_channels=1, input_size=8)
    model.load_state_dict(ckpt["model"])
    return tdbn.fuse(model.eval())


def test_export_nir(trained_run: Path, tmp_path: Path, capsys):
    # the portable form's float rounding differs from the fused model's: its predictions are compared on test
    # digits, on a network trained well enough that they are decisions, not near-ties (conftest)
    run_dir = trained_run
    out = tmp_path / "digits.nir"
    assert main(["export", str(run_dir), str(out), "--format", "nir"]) == 0
    text = capsys.readouterr().out
    assert "16/16 identical predictions" in text and "read back: max |output - fused model|" in text
    x = torch.rand(5, 1, 8, 8)  # the digits demo: 8x8 grey images
    fused = _fused_from_checkpoint(run_dir)
    with torch.no_grad():
        assert torch.equal(from_nir(out)(x).argmax(1), fused(x).argmax(1))
    literal = tmp_path / "literal.nir"  # r = 1 / (1 - tau), AvgPool2d: bit-identical in from_nir
    assert main(["export", str(run_dir), str(literal), "--format", "nir", "--literal"]) == 0
    assert "read back: max |output - fused model| = 0" in capsys.readouterr().out
    with torch.no_grad():
        assert torch.equal(from_nir(literal)(x), fused(x))


def test_export_onnx(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "digits.onnx"
    assert main(["export", str(run_dir / "checkpoint.pt"), str(out), "--format", "onnx"]) == 0
    assert out.is_file() and "onnx, T=2 unrolled" in capsys.readouterr().out


def test_export_errors_are_clear(run_dir: Path, tmp_path: Path, capsys):
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "m.nir"), "--format", "nir"]) == 2
    assert "missing.pt: checkpoint not found" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(tmp_path / "no" / "m.nir"), "--format", "nir"]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(tmp_path / "m.onnx"), "--format", "onnx", "--dt", "1e-3"]) == 2
    assert "--dt applies to --format nir only" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(tmp_path / "m.nir"), "--format", "nir", "--per-channel"]) == 2
    assert "--per-channel applies to the integer network: pass --bits K too" in capsys.readouterr().err
