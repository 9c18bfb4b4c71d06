"""The packages' import graph has no circle: each module imports only floors below itself, at the
top of the file or inside a function alike (a deferred import is still a circle, only hidden)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "shared",
    "ingest_service",
    "scoring_service",
    "themes_service",
    "followup_service",
    "alerts_service",
    "delivery_service",
    "services",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project's modules that `path` imports (`from a.b import c` counts `a.b.c` when that is a
    module, else `a.b`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in modules:
                    found.add(child)
                elif node.module in modules:
                    found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")]
    files = [p for p in files if "migrations" not in p.parts]  # Alembic loads those by path
    modules = {module_name(p): p for p in files}
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle in the graph, as the modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_finder_sees_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["shared", "all"])
def test_no_module_imports_a_floor_above_itself(package: str) -> None:
    edges = graph()
    if package == "shared":
        edges = {m: {t for t in ts if t.startswith("shared.")} for m, ts in edges.items() if m.startswith("shared.")}
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)
