"""The package's shape, checked: no import cycle, layers that only look down, short functions.

Imports are read from the source (``ast``), including those under
``TYPE_CHECKING`` and inside functions: a cycle hidden from the interpreter
still ties two modules together for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "woasr"

MAX_FUNCTION_LINES = 60
LONGER_FUNCTIONS: dict[str, str] = {}
"""``module:function`` allowed past the limit, with the reason (docs/architecture.md repeats it)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> set[str]:
    """The package's modules ``name`` imports (a package counts as its ``__init__``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in MODULES and target != name)
    return found


def graph() -> dict[str, set[str]]:
    """Import edges; an import of ``a.b.c`` also runs ``a.b``'s ``__init__``, unless the importer is inside it."""
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        targets = set()
        for target in imported(name):
            parts = target.split(".")
            parents = {".".join(parts[:i]) for i in range(2, len(parts))}
            targets |= {target} | {p for p in parents if not name.startswith(p + ".") and p != name}
        edges[name] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    assert find_cycle(graph()) is None


LAYERS = {
    # package: packages it must never import
    "woasr.core": ("woasr.asr", "woasr.engine", "woasr.protocol", "woasr.server", "woasr.transports",
                   "woasr.clients", "woasr.tools", "woasr.cli"),
    "woasr.protocol": ("woasr.asr", "woasr.engine", "woasr.server", "woasr.transports", "woasr.clients",
                       "woasr.tools", "woasr.cli"),
    "woasr.engine": ("woasr.protocol", "woasr.server", "woasr.transports", "woasr.clients", "woasr.tools"),
    "woasr.server": ("woasr.clients", "woasr.tools", "woasr.cli"),
    "woasr.transports": ("woasr.clients", "woasr.tools", "woasr.cli"),
    "woasr.clients": ("woasr.asr", "woasr.engine", "woasr.server", "woasr.transports", "woasr.tools"),
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_only_import_downwards(package):
    wrong = {
        (name, target)
        for name in MODULES if name == package or name.startswith(package + ".")
        for target in imported(name)
        if any(target == banned or target.startswith(banned + ".") for banned in LAYERS[package])
    }
    assert not wrong


def test_only_the_entry_point_of_the_server_knows_the_transports():
    importers = {name for name in MODULES for target in imported(name) if target.startswith("woasr.transports")}
    assert {name for name in importers if not name.startswith("woasr.transports")} == {"woasr.server.main"}


def test_no_function_is_longer_than_the_limit():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{name}:{node.name}" not in LONGER_FUNCTIONS:
                    long[f"{name}:{node.name}"] = lines
    assert not long
