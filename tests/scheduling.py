"""How `pytest -n` (pytest-xdist) hands out the tests: one at a time, except those that share a
fixture too dear to start twice, which go to one worker together:

- a package-scoped fixture (the whole loop, `nps up`, in tests/e2e): every test file of that
  package that uses it, in one group;
- a module-scoped fixture (a live ingest process per module): that file's tests, in one group.

A file can ask for its own copy of a package-scoped fixture with a module-level `FIXTURE_COPY =
"name"`: the files naming the same copy form their own group, which another worker runs with a
fixture it starts itself. One copy of the whole loop ran every e2e file one after the other, the
suite's longest chain; two copies cost one more `nps up` and halve it.

Each worker has its own PostgreSQL and broker (session scope, a second or two to start). The groups
are read from the test files' source, in the controller, which collects nothing itself: xdist's
own `xdist_group` marks travel in mutated node ids, which pytest 9.2 no longer carries
(pytest-xdist issue 1386), and a mark someone forgets is a fixture started twice, where this
follows the fixtures the tests actually name."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

from xdist.scheduler import LoadScopeScheduling

SHARED_SCOPES = ("module", "package")


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "fixture"


def _scope_of(decorator: ast.expr) -> str:
    if isinstance(decorator, ast.Call):
        for keyword in decorator.keywords:
            if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return "function"


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@functools.cache
def shared_fixtures(path: Path) -> dict[str, str]:
    """The module- and package-scoped fixtures `path` defines, by name: their scope."""
    found = {}
    for function in _functions(path):
        for decorator in function.decorator_list:
            if _is_fixture(decorator) and (scope := _scope_of(decorator)) in SHARED_SCOPES:
                found[function.name] = scope
    return found


def fixture_copy(path: Path) -> str | None:
    """The file's `FIXTURE_COPY = "name"`, if it sets one at module level."""
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "FIXTURE_COPY" for t in node.targets)
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return None


@functools.cache
def group_of_file(path: Path, root: Path) -> str | None:
    """The group a test file's tests run in, or None: each test on its own."""
    if not path.is_file():
        return None
    # The fixtures in reach: the conftests from the root down to the file's folder, then the file.
    reach: dict[str, tuple[str, Path]] = {}
    folder = path.parent
    conftests = [d / "conftest.py" for d in [folder, *folder.parents] if d == root or root in d.parents]
    for defining in [*reversed(conftests), path]:
        if defining.is_file():
            reach |= {name: (scope, defining.parent) for name, scope in shared_fixtures(defining).items()}
    named = {
        arg.arg
        for function in _functions(path)
        if function.name.startswith("test") or any(_is_fixture(d) for d in function.decorator_list)
        for arg in function.args.args
    }
    used = sorted((scope, name, where) for name, (scope, where) in reach.items() if name in named)
    for scope, name, where in sorted(used, key=lambda u: u[0] != "package"):
        if scope == "package":
            copy = fixture_copy(path)
            return f"{where.relative_to(root)}::{name}" + (f"::{copy}" if copy else "")
    return str(path.relative_to(root)) if used else None


class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """xdist's load-by-scope scheduling, with our groups as the scopes (tests/scheduling.py)."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self._root = Path(config.rootpath)

    def _split_scope(self, nodeid: str) -> str:
        group = group_of_file(self._root / nodeid.split("::", 1)[0], self._root)
        return group or nodeid
