"""The package's import graph follows the flow: every module imports, nothing
imports a module of a higher step, and no modules import each other in a circle.
Imports made inside functions (to keep start-up fast) count like any other."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diffcli"

# From the bottom up: a module may import modules of its own step or lower ones.
# Modules are named by their dotted path under diffcli/ (a folder's __init__.py by
# the folder's name; the package's own by "__init__").
STEPS = [
    ("foundation", {"errors", "switches", "allocator", "budget", "engine.cbuild", "graph.rewrites", "graph.series",
                    "language", "graph", "engine", "io"}),
    ("language tables", {"language._tables", "language.lalr"}),
    ("operations", {"graph.ops"}),
    ("names", {"language.arrays", "language.functions", "language.synonyms"}),
    ("graph", {"graph.nodes"}),
    ("on graphs", {"language.parse", "graph.autodiff", "graph.formula", "graph.simplify", "engine.sparsity"}),
    ("printers", {"graph.latex", "graph.numpy_code", "graph.steps"}),
    ("plan back-ends", {"engine.diagonal", "engine.windows", "engine.native"}),
    ("engine", {"engine.evaluate", "engine.taylor", "engine.tensors"}),
    ("library", {"api", "api.function", "api.binding", "api.requests", "api.growth", "api.result",
                 "api.check", "api.formulas"}),
    ("input and output", {"io.points", "io.columnar", "io.render", "io.plot", "io.pipeline", "io.cluster"}),
    ("public API", {"__init__"}),
    ("command", {"cli", "__main__"}),
]
STEP_OF = {module: i for i, (_, modules) in enumerate(STEPS) for module in modules}

# The one circle left, among the input and output modules of issue 15 (points
# and render import columnar lazily, columnar imports both). The test fails when
# another circle appears, and when this one is broken (then empty the set).
KNOWN_CIRCLES = {frozenset({"io.columnar", "io.points", "io.render"})}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> list[str]:
    return sorted(_name(p) for p in PACKAGE.rglob("*.py"))


def _path(module: str) -> Path:
    if module == "__init__":
        return PACKAGE / "__init__.py"
    base = PACKAGE.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_module(dotted: str) -> bool:
    base = PACKAGE.joinpath(*dotted.split(".")) if dotted else PACKAGE
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _target(names: list[str]) -> str:
    return ".".join(names) or "__init__"


NAMES: list[tuple[str, str, str]] = []  # (importer, module, name) for each `from module import name`


def _imports(module: str) -> set[str]:
    """The package's modules that module imports, anywhere in its text."""
    path = _path(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = [] if module == "__init__" else module.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "diffcli"):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                named = base + (node.module.split(".") if node.module else [])
            else:
                named = node.module.split(".")[1:]
            for alias in node.names:  # from X import y: y is a module of X, or a name in X
                sub = named + [alias.name]
                if _is_module(".".join(sub)):
                    found.add(_target(sub))
                else:
                    found.add(_target(named))
                    NAMES.append((module, _target(named), alias.name))
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("diffcli.")}
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in _modules()}


def _reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in GRAPH.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports(module):
    name = "diffcli" if module == "__init__" else f"diffcli.{module}"
    if module == "__main__":  # importing it runs the command
        assert importlib.util.find_spec(name).origin == str(PACKAGE / "__main__.py")
        return
    assert importlib.import_module(name).__name__ == name


def test_every_import_inside_the_package_names_a_module():
    """An import inside a function runs only when it is reached: here every one
    is checked to name a module that exists (after modules moved into folders)."""
    unknown = [f"{module} imports {other}" for module, imported in GRAPH.items() for other in imported
               if other not in GRAPH]
    assert unknown == []
    missing = [f"{importer} imports {name} from {module}" for importer, module, name in NAMES
               if module in GRAPH and not hasattr(importlib.import_module(
                   "diffcli" if module == "__init__" else f"diffcli.{module}"), name)]
    assert missing == []


def test_every_module_has_a_step():
    missing = set(GRAPH) - set(STEP_OF)
    assert not missing, f"put {sorted(missing)} into one of the steps of tests/test_imports.py"


def test_nothing_imports_up_the_flow():
    upward = [f"{module} ({STEPS[STEP_OF[module]][0]}) imports {other} ({STEPS[STEP_OF[other]][0]})"
              for module, imported in GRAPH.items() for other in imported
              if module in STEP_OF and other in STEP_OF and STEP_OF[other] > STEP_OF[module]]
    assert upward == []


def test_no_import_circles():
    reach = {module: _reachable(module) for module in GRAPH}
    circles = set()
    for module in GRAPH:
        together = frozenset({module} | {other for other in reach[module] if module in reach[other]})
        if len(together) > 1:
            circles.add(together)
    assert circles == KNOWN_CIRCLES


def test_the_graph_is_read_right():
    """The reader finds imports inside functions and of the package itself (so
    the tests above could fail): evaluate imports native only when a batch is big."""
    assert "engine.native" in GRAPH["engine.evaluate"] and "__init__" in GRAPH["cli"]
    assert "engine.evaluate" not in GRAPH["engine.native"] and "language.parse" not in GRAPH["language.lalr"]
    assert "graph.autodiff" in GRAPH["api.binding"]  # from ..graph import autodiff: the module


# Records every mallopt() made through ctypes (the only way Python code reaches it).
_WATCH_MALLOPT = """
import ctypes, sys
calls = []

class Watched(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return super().__getattr__(name)

ctypes.CDLL = Watched
import numpy as np
"""


def _run(script: str) -> str:
    return subprocess.run([sys.executable, "-c", _WATCH_MALLOPT + script], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PACKAGE.parent),
                                           "DIFFCLI_NATIVE": "0"}).stdout


def test_importing_diffcli_and_computing_changes_nothing_process_wide():
    """NumPy's floating-point error handling is the same after `import diffcli`
    and computations (one point, and a batch cut into blocks) as before, and
    glibc's allocator is never tuned."""
    out = _run("""
before = np.geterr()
import diffcli
f = diffcli.compile("sum(sin(x) * x[0]) + log(x[1] - 1)")
f.grad(x=np.linspace(0, 1, 200_000).reshape(20_000, 10), batch_ndim=1)
f.hessian(x=[0.0, 0.5])
print(np.geterr() == before, calls)
""")
    assert out.split() == ["True", "[]"], out


def test_the_command_tunes_the_allocator_of_its_own_process():
    out = _run("""
from diffcli.cli import main
sys.argv = ["diffcli", "grad", "x^2", "--at", "x=3"]
try:
    main()
except SystemExit:
    pass
print(calls)
""")
    assert out.splitlines()[-1] == "['mallopt']", out  # (ctypes looks a function up once)


def test_numpy_error_handling_is_the_callers_after_a_computation():
    import diffcli

    before = np.geterr()
    with np.errstate(all="raise"):
        result = diffcli.compile("log(x)").grad(x=0.0)  # would raise divide-by-zero unless quieted inside
        assert np.geterr()["divide"] == "raise"
    assert np.geterr() == before and result["x"] == np.inf


def _plan_private_names() -> set[str]:
    """The names of evaluate.Plan's private fields and methods (self._x)."""
    tree = ast.parse(_path("engine.evaluate").read_text(encoding="utf-8"))
    plan = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Plan")
    names = {f.name for f in plan.body if isinstance(f, ast.FunctionDef) and f.name.startswith("_")
             and not f.name.startswith("__")}
    names |= {n.attr for n in ast.walk(plan) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
              and isinstance(n.value, ast.Name) and n.value.id == "self"}
    return names


def test_no_module_reads_the_plans_private_fields():
    """Only evaluate.py touches Plan's fields that start with _; the back-ends
    (native, diagonal, windows) and everyone else read its public interface."""
    private = _plan_private_names()
    assert {"_slot", "_steps", "_execute", "_fusion"} <= private
    readers = []
    for module in GRAPH:
        if module == "engine.evaluate":
            continue
        tree = ast.parse(_path(module).read_text(encoding="utf-8"))
        readers += [f"{module}.py:{n.lineno} .{n.attr}" for n in ast.walk(tree)
                    if isinstance(n, ast.Attribute) and n.attr in private
                    and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]
    assert readers == []
