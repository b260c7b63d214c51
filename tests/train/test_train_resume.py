"""A run killed with SIGKILL during an epoch and resumed ends exactly as an uninterrupted run (same seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tdbn.cli import main
from tdbn_train_helpers import metrics, model_state, one_thread, tiny, without_times  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# 16 steps per epoch, so that the kill lands inside an epoch
ARGS = tiny("data.train_limit=512", "optim.epochs=4", "optim.lr=0.2", "threads=1")
CMD = [sys.executable, "-m", "tdbn.cli", "train"]  # the run to kill is a separate process


def _lines(path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, capsys):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(["train", *ARGS, f"run_dir={ref}"]) == 0  # uninterrupted, in this process
    epoch_s = metrics(ref)[1]["epoch_s"]

    proc = subprocess.Popen([*CMD, *ARGS, f"run_dir={cut}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _lines(cut / "metrics.jsonl") < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(epoch_s / 2)  # about the middle of epoch 3
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _lines(cut / "metrics.jsonl")
    assert done < 4, "the run finished before it could be killed"
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"] >= 1

    assert main(["train", "--resume", str(cut)]) == 0  # resumed in this process, 1 thread as the killed run
    assert "resuming after epoch" in capsys.readouterr().out

    assert without_times(metrics(cut)) == without_times(metrics(ref))
    a, b = model_state(ref), model_state(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_different_configuration_but_extends_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *tiny("optim.epochs=1"), f"run_dir={run}"]) == 0
    assert main(["train", *tiny("optim.epochs=2", "optim.lr=0.5"), "--resume", str(run)]) == 2
    assert "optim.lr: 0.1 in the run, 0.5 now" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "optim.epochs=2"]) == 0  # the run's own config, more epochs
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
