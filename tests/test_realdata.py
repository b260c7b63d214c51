"""Real-data tests skip on a public clone (naming the data set and where to get it) and fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import realdata

TESTS = Path(__file__).resolve().parent


def test_find_names_the_data_set_and_the_source(tmp_path):
    env = {"TDBN_TEST_DATA": str(tmp_path)}
    root, reason = realdata.find("mnist", env)
    assert root is None and "'mnist'" in reason and "mnist.npz" in reason and "TDBN_TEST_DATA" in reason
    assert "\n" not in reason
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"")
    assert realdata.find("mnist", env) == (tmp_path, "")
    assert realdata.data_root({}) == realdata.DEFAULT_ROOT  # ../shared/data beside the repository


def test_required_under_ci_or_opt_in():
    assert not realdata.required({})
    assert realdata.required({"CI": "true"}) and realdata.required({"TDBN_REQUIRE_TEST_DATA": "1"})
    assert not realdata.required({"CI": "false", "TDBN_REQUIRE_TEST_DATA": "0"})


def _pytest(folder: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "TDBN_REQUIRE_TEST_DATA", "TDBN_TEST_DATA")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        env={**clean, "PYTHONPATH": str(TESTS), **env}, capture_output=True, text=True, timeout=120,
    )


def test_missing_data_skips_and_fails_under_ci(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("from realdata import shared_mnist  # noqa: F401\n")
    (suite / "test_uses_mnist.py").write_text("def test_mnist(shared_mnist):\n    assert shared_mnist.is_dir()\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    skipped = _pytest(suite, TDBN_TEST_DATA=str(empty))
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout and "real data set 'mnist' not found" in skipped.stdout
    failed = _pytest(suite, TDBN_TEST_DATA=str(empty), CI="true")
    assert failed.returncode == 1 and "1 error" in failed.stdout and "required: CI" in failed.stdout, failed.stdout
    (empty / "mnist").mkdir()
    (empty / "mnist" / "mnist.npz").write_bytes(b"")
    found = _pytest(suite, TDBN_TEST_DATA=str(empty), CI="true")
    assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout
