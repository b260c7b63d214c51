"""docs/operators.md lists every place that decides which kernel runs; this test finds the constructs that decide
in the sources and checks that the table lists exactly the functions that hold them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tdbn"
SCANNED = ("operators", "functional", "layers")

#: what decides, anywhere in the scanned packages (a definition is no decision)
DECIDES = re.compile(r"register_kernel\(|(?<!def )\bavailable\(\)|\.indexes\(|(?<!def )lean_enabled\(\)"
                     r"|(?<!def )reference_forced\(\)|is_compiling\(\)|is_tracing\(\)|backend (==|!=) ")
#: in the op layer also: an import that may fail, attribute routing
DECIDES_IN_OPERATORS = re.compile(r"except ImportError|__getattr__")
#: in a device's kernels: a call into the reference, its fallback for operands it cannot index
KERNEL_MODULES = ("cpu.py", "cuda_units.py", "cuda_lif.py")
FALLBACK = re.compile(r"\b(recursions|reference)\.\w+\(")
#: functions that hold a construct above and decide nothing
NOT_DECISIONS: set[tuple[str, str]] = set()


def _places_in_code() -> set[tuple[str, str]]:
    found = set()
    for package in SCANNED:
        for path in sorted((PACKAGE / package).glob("*.py")):
            rel = path.relative_to(PACKAGE).as_posix()
            source = path.read_text()
            spans = [(node.lineno, node.end_lineno, node.name) for node in ast.walk(ast.parse(source))
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for i, line in enumerate(source.splitlines(), 1):
                code = line.split("#")[0]
                hit = DECIDES.search(code) or (package == "operators" and DECIDES_IN_OPERATORS.search(code)) or (
                    path.name in KERNEL_MODULES and FALLBACK.search(code))
                if hit:
                    inner = min(((end - start, name) for start, end, name in spans if start <= i <= end),
                                default=(0, "<module>"))
                    found.add((rel, inner[1]))
    return found - NOT_DECISIONS


def _places_in_docs() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "operators.md").read_text()
    table = text.split("<!-- decision places: begin -->")[1].split("<!-- decision places: end -->")[0]
    return set(re.findall(r"^\| `([\w/]+\.py)` \| `(\w+)` \|", table, re.M))


def test_the_documented_decision_places_are_the_only_ones():
    code, docs = _places_in_code(), _places_in_docs()
    assert code == docs, f"in the code, not in docs/operators.md: {sorted(code - docs)}; documented, not in the " \
                         f"code: {sorted(docs - code)}"


def test_no_routing_object_and_no_tracer_checks_in_the_op_layer():
    """The dispatcher routes by device; nothing in the op layer routes again or asks whether a tracer runs
    (tracing never enters a custom operator's implementation)."""
    for path in (PACKAGE / "operators").glob("*.py"):
        source = path.read_text()
        for construct in ("__getattr__", "is_compiling()", "is_tracing()", "NamedTuple):\n    integrate"):
            assert construct not in source, f"{path.name}: {construct}"
