"""What a user sees from ``tdbn train`` and ``tdbn eval`` in a terminal-less shell: logs without progress bars,
one-line warnings, errors that name the real problem, results never overwritten unasked (``tdbn`` subprocesses)."""

from __future__ import annotations

import json
import os
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
    (tmp_path / "empty").mkdir()
    proc = run_tdbn("eval", tmp_path / "empty", "--quiet")
    assert f"{tmp_path / 'empty'} is not a run folder: it holds neither checkpoint.pt nor config.json" in proc.stderr
    stopped = shutil.copytree(run, tmp_path / "stopped", ignore=shutil.ignore_patterns("*.pt"))
    proc = run_tdbn("eval", stopped, "--quiet")  # a run killed before its first checkpoint
    assert f"the run folder {stopped} has no checkpoint.pt yet" in proc.stderr
    with pytest.raises(CheckpointError, match=r"typo.pt: checkpoint not found \(no such file or folder; .* holds"):
        tdbn.load(run / "typo.pt")


def test_paths_that_are_no_run_say_what_they_are(logged_run, tmp_path):
    """A path that does not exist is called that; the folder that holds run folders (``runs/``) is called that, with
    its runs named, never "the run folder ... has no checkpoint yet"."""
    run, _ = logged_run
    parent = tmp_path / "runs"
    older = shutil.copytree(run, parent / "older")
    newer = shutil.copytree(run, parent / "newer")
    os.utime(older, (1, 1))  # modification times decide which is the newest
    missing = parent / "nonexist"
    proc = run_tdbn("train", "--resume", missing)  # no preset: the run's own configuration
    assert proc.returncode == 2 and proc.stderr.strip() == f"tdbn train: error: --resume {missing}: no such run folder"
    with pytest.raises(CheckpointError) as err:
        tdbn.saved_config(missing)
    assert str(err.value) == f"{missing}: checkpoint not found (no such file or folder)"
    folder_of_runs = (f"{parent} is a folder of run folders, not a run folder: it holds 2 runs (newer, older); name "
                      f"one of them, e.g. {newer} (the newest)")
    proc = run_tdbn("eval", parent, "--quiet")
    assert proc.returncode == 2 and proc.stderr.strip() == f"tdbn eval: error: {folder_of_runs}"
    for args in (["train", "--resume", parent], ["train", "mnist", "--resume", parent]):
        proc = run_tdbn(*args)
        assert proc.returncode == 2 and folder_of_runs in proc.stderr and "has no checkpoint" not in proc.stderr
    with pytest.raises(CheckpointError, match="is a folder of run folders"):
        tdbn.saved_config(parent)
    assert sorted(p.name for p in parent.iterdir()) == ["newer", "older"]  # nothing written


def test_a_data_root_of_the_wrong_kind_is_named_as_typed(tmp_path):
    """The path in the message is the one typed (not resolved through a symbolic link), and the message says what
    is wrong with it: a file of another kind, a file where a folder belongs, nothing there at all."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "1.bs2").write_bytes(bytes(10))  # an existing file of the wrong kind
    (tmp_path / "data").symlink_to(tmp_path / "real", target_is_directory=True)
    cases = [("mnist", "data/1.bs2", "data/1.bs2: a file that is not an .npz archive (give the .npz file or the "
                                     "folder of idx files)."),
             ("nmnist", "data/1.bs2", "data/1.bs2: a file, not a folder."),
             ("nmnist", "data/none", "data/none: not found (no such file or folder).")]
    for preset, root, first in cases:
        proc = run_tdbn("train", preset, f"data.root={root}", "out_dir=runs", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.splitlines()
        assert lines[0] == f"tdbn train: error: {first}" and lines[1] == "Expected layout:", proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "real"]  # no run folder


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
    assert main(["eval", str(run), "--quiet", "--force"]) == 0
    full = (run / "eval.json").read_text()
    assert main(["eval", str(run), "--limit", "16", "--quiet", "--force"]) == 0
    assert f"wrote {run / 'eval-limit16.json'}" in capsys.readouterr().out
    assert json.loads((run / "eval-limit16.json").read_text())["samples"] == 16
    assert (run / "eval.json").read_text() == full and json.loads(full)["samples"] == 64


def test_eval_again_shows_the_result_and_keeps_results_of_other_settings(logged_run, tmp_path):
    """A second ``tdbn eval RUN`` evaluates and prints, and writes its file again (the same settings); a file holding
    the result of other settings is refused before evaluating, naming the difference; a bad option is named
    before any file is looked at."""
    run = shutil.copytree(logged_run[0], tmp_path / "run")
    first = run_tdbn("eval", run, "--quiet")
    assert first.returncode == 0, first.stderr
    written = json.loads((run / "eval.json").read_text())
    again = run_tdbn("eval", run, "--quiet")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == first.stdout.splitlines()[0] and "top-1" in again.stdout
    assert f"wrote {run / 'eval.json'} (again: the same settings)" in again.stdout
    assert json.loads((run / "eval.json").read_text()) == written
    proc = run_tdbn("eval", run, "--quiet", "--batch-size", "7")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.strip() == (
        f"tdbn eval: error: {run / 'eval.json'} holds the result of other settings (batch_size: default then, 7 "
        "now); pass --force to replace it, or --out FILE to write elsewhere")
    proc = run_tdbn("eval", run, "--limit", "0", "--out", run / "eval.json")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "tdbn eval: error: the test limit must be >= 1 sample, got 0 (omit --limit for the whole split)")
    assert json.loads((run / "eval.json").read_text()) == written
    (run / "checkpoint.prev.pt").replace(run / "checkpoint.pt")  # the run's checkpoint changed since
    proc = run_tdbn("eval", run, "--quiet")
    assert proc.returncode == 2 and "another checkpoint (the run has changed since)" in proc.stderr


def test_integer_results_are_named_by_their_settings(logged_run, tmp_path):
    """``--bits``, ``--per-channel`` and ``--limit`` each give their own file: none replaces another."""
    run = shutil.copytree(logged_run[0], tmp_path / "run")
    (run / "eval-int8.json").write_text("{}")  # the whole split's, from before
    for args, name in ((["--limit", "20"], "eval-int8-limit20.json"),
                       (["--limit", "20", "--per-channel"], "eval-int8-per-channel-limit20.json")):
        proc = run_tdbn("eval", run, "--bits", "8", *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == f"wrote {run / name}"
        assert json.loads((run / name).read_text())["samples"] == 20
    assert json.loads((run / "eval-int8-per-channel-limit20.json").read_text())["per_channel"] is True
    assert (run / "eval-int8.json").read_text() == "{}"
    proc = run_tdbn("eval", run, "--bits", "1")
    assert proc.returncode == 2 and "--bits must be 2..16" in proc.stderr
