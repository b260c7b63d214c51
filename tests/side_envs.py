"""Where the tests find the simulators that are not tdbn test dependencies (Norse, SpikingJelly, NeuroBench): each in
an environment of its own, named by an environment variable or made by ``bash bench/consumer_envs.sh`` in
``.consumer-venvs/`` (``make test`` makes them when it can)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / ".consumer-venvs"


def side_python(package: str, variable: str) -> str | None:
    """The Python of ``package``'s side environment: ``$variable``, else ``.consumer-venvs/PACKAGE/bin/python``
    when it exists, else None (the test then skips, saying how to make one)."""
    named = os.environ.get(variable)
    if named:
        return named
    made = ROOT / package / "bin" / "python"
    return str(made) if made.is_file() else None
