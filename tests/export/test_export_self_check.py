"""``tdbn export`` checks the written file on real test samples of the run (and says so where it cannot), and the
bad inputs of ``tdbn export`` / ``tdbn eval --bits`` are one line each, exit code 2, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

import tdbn
from tdbn.cli import main
from tdbn.export import write_nir


def test_export_checks_on_test_samples_of_the_run(run_dir: Path, tmp_path: Path, capsys):
    literal = ["--literal"]  # bit-identical to the fused model (the portable form: test_export_cli.py)
    assert main(["export", str(run_dir), str(tmp_path / "m.nir"), "--format", "nir", *literal]) == 0
    text = capsys.readouterr().out
    assert "read back: max |output - fused model| = 0 on 16 test samples of digits" in text
    assert main(["export", str(run_dir), str(tmp_path / "i.nir"), "--format", "nir", "--bits", "8"]) == 0
    text = capsys.readouterr().out
    assert "18/18 LIF layers with bit-identical spikes to the integer simulation on 16 test samples of digits" in text


def test_export_says_when_the_data_cannot_be_read(run_dir: Path, tmp_path: Path, capsys, monkeypatch):
    import tdbn.train.data
    from tdbn.data import DataNotFoundError

    def missing(cfg, **_):
        raise DataNotFoundError(Path("/nowhere/digits"), expected="digits/ (a folder)", source="elsewhere")

    monkeypatch.setattr(tdbn.train.data, "build_data", missing)
    assert main(["export", str(run_dir), str(tmp_path / "m.nir"), "--format", "nir", "--literal"]) == 0
    text = capsys.readouterr().out
    assert "on 4 random inputs: the run's digits data cannot be read (/nowhere/digits" in text
    assert "pass --data ROOT" in text
    assert "test samples" not in text


def test_a_nir_file_where_a_run_is_expected(run_dir: Path, tmp_path: Path, capsys):
    graph = tmp_path / "other.nir"
    write_nir(tdbn.load(run_dir), graph, input_shape=(1, 8, 8))
    for argv in (["export", str(graph), str(tmp_path / "out.nir"), "--format", "nir"], ["eval", str(graph)],
                 ["eval", str(graph), "--bits", "8"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{graph} is a NIR graph (an HDF5 file), not a training checkpoint: pass the run folder" in err
        assert "tdbn.export.from_nir" in err and "corrupted" not in err


def test_eval_per_channel_needs_bits(run_dir: Path, capsys):
    assert main(["eval", str(run_dir), "--per-channel"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tdbn eval: error: --per-channel applies to the integer network: pass --bits K too"


def test_eval_out_in_a_missing_folder_fails_before_evaluating(run_dir: Path, tmp_path: Path, capsys, monkeypatch):
    import tdbn.export.quant_eval
    import tdbn.train

    def never(*_, **__):
        pytest.fail("evaluated although the output folder is missing")

    monkeypatch.setattr(tdbn.export.quant_eval, "evaluate_integer", never)
    monkeypatch.setattr(tdbn.train, "evaluate_checkpoint", never)
    out = tmp_path / "missing" / "e.json"
    for extra in (["--bits", "8"], []):
        assert main(["eval", str(run_dir), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"tdbn eval: error: --out {out}: folder {out.parent} does not exist; create it or name another " \
                      "file"
