"""The ``tdbn`` program in a subprocess, as a user runs it: its own process, its own stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``tdbn`` subprocess: this checkout's package first, one passive OpenMP thread."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", **extra}


def tdbn(*args: str, cwd: str | Path | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m tdbn.cli ARGS`` with text output captured (pass ``stderr=subprocess.STDOUT`` to merge them)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "tdbn.cli", *map(str, args)], env=cli_env(), cwd=cwd, text=True,
                          timeout=timeout, **kwargs)
