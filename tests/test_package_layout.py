"""The package's architecture, checked: layers import one way, no import circle, no import hidden
in a function, and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tst_titan

PACKAGE_DIR = Path(tst_titan.__file__).parent

#: The layers, lowest first: a module may import its own layer and the ones before it.
LAYERS = (
    ("tst_titan.job_config", "tst_titan.run_files"),
    ("tst_titan.method",),
    ("tst_titan.datastore",),
    ("tst_titan.infra",),
    ("tst_titan.components",),
    ("tst_titan.flavors", "tst_titan.train_spec", "tst_titan.config"),
    ("tst_titan.analysis", "tst_titan.export"),
    ("tst_titan.evaluation",),
    ("tst_titan.experiments",),
    ("tst_titan.tools",),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
_PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}


def _layer(module: str) -> int:
    if module == "tst_titan":  # the root package: the method's public names only
        return 1
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's Layout")


def _imported(node: ast.AST, module: str) -> list[str]:
    """tst_titan modules an import statement names (``from pkg import submodule`` names both)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "tst_titan"]
    if isinstance(node, ast.ImportFrom):
        assert not node.level, f"{module}: relative import (the package imports absolutely)"
        base = node.module or ""
        if base.split(".")[0] != "tst_titan":
            return []
        names = [base]
        names += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
        return names
    return []


def _top_level_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        found.update(n for n in _imported(node, module) if n in MODULES)
    found.discard(module)
    return found


GRAPH = {m: _top_level_imports(m) for m in MODULES}


def test_every_module_is_in_a_layer_and_imports_point_down():
    wrong = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
             for m, deps in GRAPH.items() for d in deps if _layer(d) > _layer(m)]
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_no_import_circle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_circle_check_finds_a_circle():
    # The same check on a graph with a circle (guards the check itself).
    global GRAPH
    saved = GRAPH
    GRAPH = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        with pytest.raises(AssertionError, match="a -> b -> c -> a"):
            test_no_import_circle()
    finally:
        GRAPH = saved


def _says_why(lines: list[str], i: int) -> bool:
    """An import at line ``i`` (or the comment / import lines right above it) says it is an
    optional or heavy dependency."""
    while i >= 0:
        text = lines[i].strip()
        if "#" in text and ("optional" in text or "heavy" in text):
            return True
        if not (text.startswith(("import ", "from ", "#"))):
            return False
        i -= 1
    return False


def test_imports_inside_functions_are_optional_dependencies_with_a_reason():
    hidden = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    if not _says_why(lines, node.lineno - 1):
                        hidden.append(f"{module}:{node.lineno}: {lines[node.lineno - 1].strip()}")
                    if _imported(node, module):
                        hidden.append(f"{module}:{node.lineno}: imports tst_titan inside a function")
    assert not hidden, "imports inside functions (allowed only for optional dependencies, commented):\n" + "\n".join(hidden)


def test_every_subpackage_says_what_lives_there_and_what_it_may_import():
    for package in sorted(_PACKAGES - {"tst_titan"}):
        doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
        assert doc and "import" in doc.lower(), f"{package}/__init__.py needs a docstring saying what it may import"


def test_tools_are_thin_commands():
    for module, path in MODULES.items():
        if not module.startswith("tst_titan.tools.") or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert "main" in names, f"{module} has no main()"
        assert not any(isinstance(n, ast.ClassDef) for n in tree.body), f"{module} defines a class: library code belongs elsewhere"


# Every module imported on its own, with no other module of ours loaded before it. One interpreter
# imports the third-party libraries once, then forks a child per module: each child starts with no
# tst_titan module loaded, so an import circle among ours fails there as it would for a user.
_FORK_IMPORTER = textwrap.dedent("""
    import importlib, os, sys, traceback
    import torch, torchtitan.train, torchtitan.components.quantization  # third-party, shared
    failures = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if status:
            failures.append(name)
    print("FAILED:" + ",".join(failures))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    assert "tst_titan" not in _FORK_IMPORTER
    names = sorted(MODULES)
    out = subprocess.run([sys.executable, "-c", _FORK_IMPORTER, *names], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert out.returncode == 0, out.stderr[-4000:]
    failed = out.stdout.strip().splitlines()[-1].removeprefix("FAILED:")
    assert failed == "", f"modules that do not import alone: {failed}\n{out.stderr[-4000:]}"
