"""The code's structure, as docs/architecture.md states it: layers without import cycles, tasks that do
not import each other, one module per name, no file over 400 lines, capabilities declared not probed."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "airlab"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The airlab modules ``path`` imports anywhere (functions included), except for type checking."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: imported_modules(path, known) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package's __init__ is imported on the way to its modules: not an edge back.
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_airlab():
    assert find_cycle(import_graph()) is None


def test_no_task_imports_another_task():
    graph = import_graph()
    tasks = {name for name in graph if name.startswith("airlab.tasks.")}
    assert {"airlab.tasks.train", "airlab.tasks.evaluate", "airlab.tasks.benchmark"} <= tasks
    assert {(task, other) for task in tasks for other in graph[task] if other in tasks} == set()


def test_only_tasks_and_entry_points_import_tasks():
    """Tasks are the top layer: only the scripts and the console scripts (``airlab.cli``) import them."""
    graph = import_graph()
    importers = {name for name, deps in graph.items() for dep in deps if dep.startswith("airlab.tasks")}
    assert {name for name in importers if not name.startswith("airlab.tasks")} == {"airlab.cli"}


def test_no_two_modules_share_a_name():
    names = Counter(p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__")
    assert [name for name, count in names.items() if count > 1] == []


def test_no_file_over_400_lines():
    files = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "tests").glob("*.py")]
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_capabilities_are_declared_not_probed():
    """No ``hasattr`` and no matching of ``_target_`` strings in airlab's code."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "hasattr(" in code or ("_target_" in code and ("endswith(" in code or "in (" in code)):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
