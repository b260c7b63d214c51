"""What a user sees from ``tdbn train`` and ``tdbn eval`` in a terminal-less shell: logs without progress bars,
one-line warnings, errors that name the real problem, results never overwritten unasked (``tdbn`` subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

import tdbn
from cli_run import tdbn as run_tdbn
from tdbn.cli import main
from tdbn.train import CheckpointError, load_checkpoint, override, saved_config, train
from tdbn_train_helpers import TINY, metrics, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# the tiny run with the progress bars left on (the default), as `make demo > log 2>&1` or nohup would run it
TRAIN = ["train", *[a for a in TINY if not a.startswith("progress=")]]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, str]:
    """``(run folder, everything the command printed)``, stdout and stderr into one pipe."""
    run = tmp_path_factory.mktemp("messages") / "run"
    proc = run_tdbn(*TRAIN, f"run_dir={run}", "--device", "cpu", stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout
    return run, proc.stdout


def _damage(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 3] ^= 0x40
    file.write_bytes(bytes(data))


def test_redirected_output_holds_no_progress_bar(logged_run):
    _, log = logged_run
    assert "\r" not in log and "it/s" not in log
    epochs = [line for line in log.splitlines() if line.startswith("epoch ")]  # grep "^epoch" log
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]


def test_missing_checkpoint_names_the_path_and_what_the_folder_holds(logged_run, tmp_path):
    run, _ = logged_run
    proc = run_tdbn("eval", run / "typo.pt", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"tdbn eval: error: {run / 'typo.pt'}: checkpoint not found (no such file or "
                                   f"folder; {run} holds checkpoint.prev.pt, checkpoint.pt)")
    proc = run_tdbn("eval", tmp_path / "nonexist", "--quiet")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    assert "run folder" not in proc.stderr and "holds" not in proc.stderr  # tmp_path holds no checkpoint
    (tmp_path / "empty_run").mkdir()
    proc = run_tdbn("eval", tmp_path / "empty_run", "--quiet")
    assert f"the run folder {tmp_path / 'empty_run'} has no checkpoint.pt yet" in proc.stderr
    with pytest.raises(CheckpointError, match=r"typo.pt: checkpoint not found \(no such file or folder; .* holds"):
        tdbn.load(run / "typo.pt")


def test_resume_with_both_checkpoints_damaged_says_both_failed(logged_run, tmp_path):
    run = shutil.copytree(logged_run[0], tmp_path / "run")
    _damage(run / "checkpoint.pt")
    _damage(run / "checkpoint.prev.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    proc = run_tdbn("train", "--resume", run, "optim.epochs=3")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith(f"tdbn train: error: both checkpoints of {run} fail to load: {run / 'checkpoint.pt'}: "
                          "corrupted checkpoint") and len(err.splitlines()) == 1
    assert f"{run / 'checkpoint.prev.pt'}: corrupted checkpoint" in err and "may be intact" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_resume_fallback_is_one_warning_line(logged_run, tmp_path):
    run = shutil.copytree(logged_run[0], tmp_path / "run")
    _damage(run / "checkpoint.pt")
    proc = run_tdbn("train", "--resume", run, "optim.epochs=3")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert len(warned) == 2 and all(line.startswith("tdbn train: warning: ") for line in warned), proc.stderr
    assert f"resuming from the previous checkpoint {run / 'checkpoint.prev.pt'} (epoch 1) instead" in warned[0]
    assert "fails its digest check" in warned[1]
    assert "UserWarning" not in proc.stderr and "warn(" not in proc.stderr  # no file:line, no echoed source
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]


def test_library_warnings_name_the_callers_line(logged_run, tmp_path):
    run = shutil.copytree(logged_run[0], tmp_path / "run")
    _damage(run / "checkpoint.pt")
    cfg = override(saved_config(run), ["optim.epochs=3"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, resume=run, log=lambda s: None)  # the line the warnings must point at
    assert {Path(w.filename).name for w in caught} == {Path(__file__).name}
    assert any("resuming from the previous checkpoint" in str(w.message) for w in caught)
    assert load_checkpoint(run)["epoch"] == 3


def test_a_subset_evaluation_never_replaces_the_full_one(logged_run, capsys):
    run, _ = logged_run
    assert main(["eval", str(run), "--quiet"]) == 0
    full = (run / "eval.json").read_text()
    assert main(["eval", str(run), "--limit", "16", "--quiet"]) == 0
    assert f"wrote {run / 'eval-limit16.json'}" in capsys.readouterr().out
    assert json.loads((run / "eval-limit16.json").read_text())["samples"] == 16
    assert (run / "eval.json").read_text() == full and json.loads(full)["samples"] == 64
    proc = run_tdbn("eval", run, "--quiet")  # an existing result is kept unless --force, and nothing is computed
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"tdbn eval: error: {run / 'eval.json'} already exists; pass --force to replace it, or --out FILE to "
        "write elsewhere")
    assert (run / "eval.json").read_text() == full
    assert main(["eval", str(run), "--quiet", "--force"]) == 0
