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


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (a path that returns to its start), or None: depth-first search."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t, path + [t])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    """Edges between modules (a package's ``__init__`` re-exporting its children is not a cycle of its own):
    a depth-first search finds no module that reaches itself."""
    modules = _modules()
    graph = {m: {t for t in _imports(m, p, modules) if not modules[t].name == "__init__.py"}
             for m, p in modules.items() if p.name != "__init__.py"}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _package(module: str) -> str:
    """The subpackage of ``tdbn`` a module belongs to (``tdbn.operators.cpu`` -> ``tdbn.operators``)."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages():
    """Importing any module of a subpackage runs that subpackage's ``__init__``, so an edge from one module of
    package A to one of package B makes A depend on B as a whole: the packages' graph (every import, package
    ``__init__`` files included) must have no cycle either. Layering, bottom up: operators < functional < layers <
    models < train < export."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for m, p in modules.items():
        for t in _imports(m, p, modules):
            if _package(m) != _package(t) and _package(m) != "tdbn" and _package(t) != "tdbn":
                edges.setdefault(_package(m), set()).add(_package(t))
    cycle = _cycle(edges)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)
    assert "tdbn.functional" in edges["tdbn.layers"] and "tdbn.operators" in edges["tdbn.functional"]
