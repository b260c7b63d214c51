"""torchrun: a killed worker, a restart that continues from the latest verified checkpoint, and two nodes.

Every run here is 2 gloo processes of 1 thread on the embedded digits (6 steps of 2 x 16 samples per epoch,
2 epochs, fp32) and must end bit-identical to the same run uninterrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdbn.cli import main
from tdbn_train_helpers import free_port, metrics, model_state, one_thread, tiny, without_times  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = tiny("data.train_limit=192", "data.test_limit=50", "optim.batch_size=16", "optim.lr=0.2", "threads=1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
TIMEOUT = 240


def _launch(launcher: list[str], run: Path, *extra: str, script: list[str] | None = None) -> subprocess.Popen:
    log = open(run.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
    cmd = [*TORCHRUN, *launcher, *(script or ["-m", "tdbn.cli"]), "train", *ARGS, *extra, f"run_dir={run}"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)


def _finish(proc: subprocess.Popen, run: Path) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = run.with_suffix(".log").read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def _assert_same_run(ref: Path, run: Path) -> None:
    a, b = model_state(ref), model_state(run)
    assert a.keys() == b.keys()
    for k in a:  # fp32 parameters and running statistics, bit for bit
        assert torch.equal(a[k], b[k]), k
    assert without_times(metrics(run)) == without_times(metrics(ref))


def _worker(launcher_pid: int, rank: int) -> int:
    """The pid of the worker process of ``rank`` that the torchrun launcher ``launcher_pid`` started."""
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
    raise LookupError(f"no worker of rank {rank} under {launcher_pid}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2-process run, uninterrupted and without step checkpoints."""
    run = tmp_path_factory.mktemp("elastic") / "ref"
    _finish(_launch(["--standalone", "--nproc_per_node=2"], run), run)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["world_size"] == 2
    return run


def test_sigkill_of_a_worker_then_torchrun_restart_is_bit_identical(reference, tmp_path):
    run = tmp_path / "cut"
    proc = _launch(["--standalone", "--nproc_per_node=2", "--max-restarts=1"], run, "checkpoint_every_steps=2")
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(_worker(proc.pid, 1), signal.SIGKILL)  # right after the first (mid-epoch) checkpoint
    finally:
        out = _finish(proc, run)
    assert "torchrun restart count 1" in out  # the restarted workers found the run, no --resume
    assert "at step " in out  # ... and continued in the middle of an epoch
    _assert_same_run(reference, run)


def test_a_damaged_newest_checkpoint_falls_back_under_the_restart(reference, tmp_path):
    run = tmp_path / "damaged"
    script = [str(Path(__file__).with_name("elastic_faults.py"))]  # rank 1 damages checkpoint.pt, then SIGKILL
    out = _finish(_launch(["--standalone", "--nproc_per_node=2", "--max-restarts=1"], run,
                          "checkpoint_every_steps=2", script=script), run)
    assert "corrupted checkpoint" in out and "resuming from the previous checkpoint" in out
    assert "torchrun restart count 1" in out and "at step 2 of epoch 1" in out  # the first mid-epoch checkpoint
    _assert_same_run(reference, run)


def test_two_nodes_with_a_c10d_rendezvous_equal_one_node(reference, tmp_path):
    run = tmp_path / "nodes"
    launcher = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{free_port()}",
                "--rdzv-id=tdbn-test"]
    nodes = [_launch(launcher, run) for _ in range(2)]  # two launchers, as on two machines
    outs = [_finish(p, run) for p in nodes]
    assert any("2 process(es)" in o for o in outs)
    _assert_same_run(reference, run)


def test_under_torchrun_a_run_folder_of_another_configuration_is_refused(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", *tiny("optim.epochs=1"), f"run_dir={run}"]) == 0
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # what torchrun sets for the workers it restarts
    assert main(["train", *tiny("optim.epochs=1", "optim.lr=0.5"), f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} holds a run of another configuration" in err and "optim.lr: 0.1 in the run, 0.5" in err
    assert main(["train", *tiny("optim.epochs=1"), f"run_dir={run}"]) == 0  # the same: complete, nothing to do
    assert "has completed its 1 epochs; nothing to do" in capsys.readouterr().out
    assert main(["train", *tiny("optim.epochs=2"), f"run_dir={run}"]) == 0  # more epochs: continued
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    assert main(["train", *tiny("optim.epochs=3"), f"run_dir={run}"]) == 2  # outside torchrun: --resume needed
    assert "--resume" in capsys.readouterr().err
