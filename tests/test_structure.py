"""The code's structure, as docs/architecture.md states it: packages that import only the packages their
``__init__`` docstring allows, no import cycle, tasks that do not import each other, at most four modules at
the top, one module per name, no file over 400 lines, capabilities declared not probed, and no library's
private name outside ``airlab/compat``."""

from __future__ import annotations

import ast
import re
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
        # A module named in a ``"airlab.x.y:function"`` string is imported by name (the cli's task table).
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = re.fullmatch(r"(airlab(?:\.\w+)+):\w+", node.value)
            if named and named.group(1) in known:
                found.add(named.group(1))
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
    assert {"airlab.tasks.evaluate", "airlab.tasks.benchmark", "airlab.tasks.variance_report"} <= tasks
    assert {(task, other) for task in tasks for other in graph[task] if other in tasks} == set()


def test_only_entry_points_import_tasks():
    """Tasks are the top layer: only the console scripts (``airlab.cli``) import them."""
    graph = import_graph()
    importers = {name for name, deps in graph.items() for dep in deps if dep.startswith("airlab.tasks")}
    assert {name for name in importers if not name.startswith("airlab.tasks")} == {"airlab.cli"}


# -- layers -----------------------------------------------------------------------------------------

#: What every module may import: the package root (public API, CONFIG_DIR), the errors, the door to
#: the libraries' internals.
EVERYONE = {"airlab", "airlab.errors", "compat"}


def package_of(module: str) -> str:
    """``airlab.resume.loader`` -> ``resume``; a top-level module is its own: ``airlab.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "airlab"


def allowed_imports() -> dict[str, set[str] | None]:
    """Each package's ``May import:`` line, from its ``__init__`` docstring (None: every package)."""
    allowed: dict[str, set[str] | None] = {}
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        found = re.search(r"^May import: (.+)\.$", doc, re.MULTILINE)
        assert found, f"{init.relative_to(REPO)}: no 'May import: ...' line in its docstring"
        text = found.group(1).strip()
        if text == "every package":
            allowed[init.parent.name] = None
        elif text == "nothing":
            allowed[init.parent.name] = set()
        else:
            allowed[init.parent.name] = {name.strip() for name in text.split(",")}
    return allowed


def arrows_broken(graph: dict[str, set[str]], allowed: dict[str, set[str] | None]) -> list[str]:
    broken = []
    for module, deps in graph.items():
        source = package_of(module)
        for dep in deps:
            target = package_of(dep)
            if dep in EVERYONE or target in EVERYONE or target == source:
                continue
            if source == "cli" and target in ("tasks", "training"):
                continue
            may = allowed.get(source, set())
            if may is not None and target not in may:
                broken.append(f"{module} imports {dep}: {source} may import {sorted(may) or 'nothing'}")
    return sorted(broken)


def test_arrow_check_sees_a_broken_arrow():
    graph = {"airlab.models.vae": {"airlab.training.build", "airlab.contracts.model", "airlab.errors"}}
    allowed = {"models": {"contracts"}, "training": {"models"}}
    assert arrows_broken(graph, allowed) == [
        "airlab.models.vae imports airlab.training.build: models may import ['contracts']"
    ]


def test_packages_import_only_what_their_docstring_allows():
    allowed = allowed_imports()
    assert {"contracts", "training", "resume", "tracking", "utils", "compat"} <= set(allowed)
    assert allowed["compat"] == set() and allowed["utils"] == set()
    assert arrows_broken(import_graph(), allowed) == []


def test_package_arrows_have_no_cycle():
    allowed = {name: deps for name, deps in allowed_imports().items() if deps is not None}
    assert find_cycle(allowed) is None


def test_at_most_four_top_level_modules():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "cli.py", "errors.py"]


def test_no_two_modules_share_a_name():
    names = Counter(p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__")
    assert [name for name, count in names.items() if count > 1] == []


def test_no_file_over_400_lines():
    files = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "tests").rglob("*.py")]
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def probes(path: Path) -> list[str]:
    """``hasattr(obj, name)``, ``getattr(obj, name, default)`` and ``_target_`` matching in ``path``."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if "_target_" in code and ("endswith(" in code or "in (" in code):
            found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return found


def test_probe_check_sees_getattr_with_a_default():
    sample = REPO / "tests" / "_probe_sample.py"
    try:
        sample.write_text("x = getattr(object(), 'name', None)\ny = hasattr(object(), 'name')\n")
        assert [line.split(": ", 1)[1] for line in probes(sample)] == [
            "getattr(object(), 'name', None)",
            "hasattr(object(), 'name')",
        ]
    finally:
        sample.unlink()


def test_capabilities_are_declared_not_probed():
    """No ``hasattr``, no ``getattr(obj, name, default)`` and no matching of ``_target_`` strings."""
    assert [line for path in PACKAGE.rglob("*.py") for line in probes(path)] == []


# -- private names of libraries ----------------------------------------------------------------------


def own_private_names() -> set[str]:
    """The ``_names`` airlab defines itself (functions, classes, attributes it assigns, module names)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if name.startswith("_")}


def private_uses(path: Path, own: set[str]) -> list[str]:
    """Uses in ``path`` of a private name that airlab does not define: ``obj._x``, ``super()._x`` and
    ``from lib import _x`` (dunder names are public protocol)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
            if isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "super":
                own_ok = False  # an upstream method reached through super() is upstream's, always
            else:
                own_ok = True
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("airlab"):
            names, own_ok = [alias.name for alias in node.names], False
        for name in names:
            # Dunder names are Python's protocol; ``_target_``-style names are Hydra's config keys.
            private = name.startswith("_") and not name.endswith("_")
            if private and not (own_ok and name in own):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_private_use_check_sees_library_internals(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pyro\nfrom pyro.infer.trace_elbo import _compute_log_r\nx = pyro.get_param_store()._params\n"
    )
    uses = private_uses(sample, own={"_mine"})
    assert [use.split(": ", 1)[1] for use in uses] == [
        "from pyro.infer.trace_elbo import _compute_log_r",
        "pyro.get_param_store()._params",
    ]


def test_no_private_library_name_outside_compat():
    own = own_private_names()
    outside = [p for p in PACKAGE.rglob("*.py") if "compat" not in p.relative_to(PACKAGE).parts]
    assert [use for path in outside for use in private_uses(path, own)] == []


# -- no model names in generic code ----------------------------------------------------------------

#: The packages every model and dataset goes through: they read what a model declares
#: (``headline_metrics``, ``scalar_charts``, capabilities), never a model's own names.
GENERIC = (
    "training",
    "resume",
    "config",
    "contracts",
    "tracking",
    "utils",
    "estimators",
    "compat",
    "callbacks",
)
MODEL_NAMES = ("count_accuracy", "multimnist", "z_pres")


def test_generic_code_names_no_model():
    found = [
        f"{path.relative_to(REPO)}:{number}: {name}"
        for package in GENERIC
        for path in (PACKAGE / package).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in MODEL_NAMES
        if name in line.lower()
    ]
    assert found == []


# -- tests mirror the packages ---------------------------------------------------------------------


def test_tests_mirror_the_packages():
    """``tests/<package>/test_<module>[_<aspect>].py`` for a module of ``airlab/<package>/``; at the top
    of ``tests/``, the top-level modules' tests and this file."""
    misplaced = []
    for path in (REPO / "tests").rglob("test_*.py"):
        folder = path.parent.relative_to(REPO / "tests")
        source = PACKAGE / folder if folder.parts else PACKAGE
        modules = {p.stem for p in source.glob("*.py") if p.stem != "__init__"}
        stem = path.stem.removeprefix("test_")
        if path.name == "test_structure.py" and not folder.parts:
            continue
        if not source.is_dir() or not any(stem == m or stem.startswith(f"{m}_") for m in modules):
            misplaced.append(str(path.relative_to(REPO)))
    assert misplaced == []
