"""Where the tests find the simulators that are not tdbn test dependencies (Norse, SpikingJelly, NeuroBench): each in
an environment of its own, named by an environment variable or made by ``bash bench/consumer_envs.sh`` in
``.consumer-venvs/`` (``make test`` makes them; they share the project's torch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realdata import required

ROOT = Path(__file__).resolve().parents[1] / ".consumer-venvs"


def side_python(package: str, variable: str) -> str | None:
    """The Python of ``package``'s side environment: ``$variable``, else ``.consumer-venvs/PACKAGE/bin/python``
    when it exists, else None."""
    named = os.environ.get(variable)
    if named:
        return named
    made = ROOT / package / "bin" / "python"
    return str(made) if made.is_file() else None


def need_side_python(package: str, variable: str) -> str:
    """``side_python``, or skip the test saying how to make the environment; under ``CI=true`` (or
    ``TDBN_REQUIRE_TEST_DATA=1``) a missing environment fails the test instead, so CI cannot pass without the
    simulators having run."""
    python = side_python(package, variable)
    if python:
        return python
    reason = (f"{package} is not a tdbn test dependency (it pins its own nir/nirtorch); set {variable} to a Python "
              "that has it, or run `bash bench/consumer_envs.sh` (make test runs it)")
    if required():
        pytest.fail(f"{reason} (required: CI or TDBN_REQUIRE_TEST_DATA is set)", pytrace=False)
    pytest.skip(reason)
