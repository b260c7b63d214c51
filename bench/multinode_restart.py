"""Two torchrun launchers (as on two machines) with --max-restarts: a worker killed, the run continued, compared.

Runs on one machine, each run into its own folder under ``--out``:

1. ``single``: one launcher, ``--standalone --nproc_per_node=2``, uninterrupted;
2. ``nodes``: two launchers, ``--nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d --rdzv-endpoint=localhost:PORT``,
   uninterrupted;
3. ``nodes-killed``: the same two launchers with ``--max-restarts=1`` and ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``;
   the worker of rank 1 is killed with SIGKILL right after the first (mid-epoch) checkpoint appears.

and prints, per run, its wall time, whether it was restarted, and whether its parameters, running statistics and
metrics equal those of ``single`` bit for bit (fp32, gloo, 1 thread per worker, the embedded digits).

    python bench/multinode_restart.py --out /tmp/multinode
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine, table  # noqa: E402

ARGS = ["model.width=0.0625", "model.timesteps=2", "data.train_limit=192", "data.test_limit=50",
        "optim.batch_size=16", "optim.epochs=2", "optim.lr=0.2", "progress=false", "threads=1"]
TIME_KEYS = {"elapsed_s", "epoch_s", "images_per_s", "test_images_per_s"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: list[str], run: Path, env: dict, *extra: str) -> subprocess.Popen:
    log = open(run.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "tdbn.cli", "train", *ARGS, *extra,
           f"run_dir={run}"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _kill_rank(run_id: str, rank: int) -> None:
    """SIGKILL the worker of ``rank`` of the torchrun job ``run_id``, found by its environment."""
    wanted = {f"TORCHELASTIC_RUN_ID={run_id}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                os.kill(int(entry.name), signal.SIGKILL)
                return
        except OSError:
            continue
    raise LookupError(f"no worker of rank {rank} in the torchrun job {run_id}")


def _state(run: Path):
    import torch

    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIME_KEYS}
               for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return ckpt["model"], metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="a folder for the three runs (emptied first)")
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    print(machine())
    rows, reference = [], None
    for name in ("single", "nodes", "nodes-killed"):
        run = args.out / name
        t0 = time.perf_counter()
        if name == "single":
            launchers = [_launch(["--standalone", "--nproc_per_node=2"], run, env)]
        else:
            killed = name == "nodes-killed"
            launcher = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                        f"--rdzv-endpoint=localhost:{_free_port()}", f"--rdzv-id={name}"]
            launcher += ["--max-restarts=1"] if killed else []
            extra = ["checkpoint_every_steps=2"] if killed else []
            node_env = {**env, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"} if killed else env
            launchers = [_launch(launcher, run, node_env, *extra) for _ in range(2)]
            if killed:
                while not (run / "checkpoint.pt").exists() and all(p.poll() is None for p in launchers):
                    time.sleep(0.005)
                _kill_rank(name, 1)
        codes = [p.wait(timeout=900) for p in launchers]
        seconds = time.perf_counter() - t0
        log = run.with_suffix(".log").read_text()
        if any(codes):
            rows.append([name, f"{seconds:.0f}", "-", f"failed {codes}: {log.strip().splitlines()[-1]}"])
            continue
        state, metrics = _state(run)
        if reference is None:
            reference = (state, metrics)
        same = all(torch_equal(state[k], reference[0][k]) for k in reference[0]) and metrics == reference[1]
        resumed = "yes (" + log.split("resuming after ")[1].split("\n")[0] + ")" if "resuming after" in log else "no"
        rows.append([name, f"{seconds:.0f}", resumed, "bit-identical" if same else "DIFFERENT"])
    print(table(["run", "wall s", "continued from a checkpoint", "vs single"], rows))


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


if __name__ == "__main__":
    main()
