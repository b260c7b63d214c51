"""What a new user reads first: ``tdbn presets`` (with each preset's time on a CPU), the program in a pipe, and
README figures that agree with each other and with the stored results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_run import cli_env
from cli_run import tdbn as run_tdbn
from tdbn.train import preset_names

REPO = Path(__file__).resolve().parents[1]


def test_a_closed_pipe_ends_quietly():
    """``tdbn presets | head -3``: the reader is gone before the first line is written."""
    proc = subprocess.Popen([sys.executable, "-m", "tdbn.cli", "presets"], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as `head` exits
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == ""  # no BrokenPipeError traceback


def test_presets_give_the_time_each_takes_on_a_cpu():
    proc = run_tdbn("presets")
    assert proc.returncode == 0, proc.stderr
    for name in ["(none)", *preset_names()]:
        block = re.search(rf"^{re.escape(name)} .*\n((?: +.*\n)*)", proc.stdout, re.MULTILINE)
        assert block, (name, proc.stdout)
        assert re.search(r"\bCPU\b.*\b(\d+ s|\d+ min|\d+(\.\d+)? h|not timed)", block[0]), (name, block[0])


def test_the_readme_quotes_one_nmnist_accuracy():
    """The README's headline table, the accuracy table and the streaming section of the full record quote the same
    run, as stored in its latency result."""
    readme = (REPO / "README.md").read_text()
    record = (REPO / "docs" / "benchmarks.md").read_text()
    stored = json.loads((REPO / "docs" / "figures" / "latency_nmnist.json").read_text())["top1"][-1]
    headline = re.search(r"([\d.]+) %", next(line for line in readme.splitlines() if line.startswith("| N-MNIST")))
    row = next(line for line in record.splitlines() if line.startswith("| N-MNIST"))
    in_table = re.search(r"\*\*([\d.]+) %\*\*", row)
    in_stream = re.search(r"gives ([\d.]+) % top-1 on the 100 real test recordings", record)
    assert headline and in_table and in_stream
    assert float(headline[1]) == float(in_table[1]) == float(in_stream[1]) == pytest.approx(100 * stored)
