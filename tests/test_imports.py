"""The package's import structure: a light core import and no import cycle between its modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tdbn"
HEAVY = ("tdbn.data", "tdbn.train", "tdbn.stream", "tdbn.export", "tdbn.analysis", "tdbn.loading")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def test_import_tdbn_loads_the_core_only():
    code = "import sys, tdbn; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('tdbn'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "tdbn.operators.unit_ops" in loaded and "tdbn.models.resnet" in loaded
    heavy = [m for m in loaded if m.startswith(HEAVY)]
    assert heavy == [], f"import tdbn loaded {heavy}"


def test_lazy_attributes_still_work():
    code = "import tdbn; print(tdbn.load.__module__, tdbn.stream.__name__, tdbn.saved_config.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tdbn.loading", "tdbn.stream", "saved_config"]


def test_no_import_cycle_between_modules():
    """Edges between modules (a package's ``__init__`` re-exporting its children is not a cycle of its own):
    a depth-first search finds no module that reaches itself."""
    modules = _modules()
    graph = {m: {t for t in _imports(m, p, modules) if not modules[t].name == "__init__.py"}
             for m, p in modules.items() if p.name != "__init__.py"}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_an_older_torch_is_refused_with_the_fix():
    import pytest

    import tdbn

    tdbn._check_torch("2.4.0+cpu")  # the oldest supported
    tdbn._check_torch(torch.__version__)
    with pytest.raises(ImportError, match=r"torch >= 2.4 .* found 2.3.1"):
        tdbn._check_torch("2.3.1")
