"""The architecture rules a newcomer relies on, checked on the source (no imports needed).

* No import cycles among the package's modules, counting imports inside functions.
* No module under ``_widgets/`` imports the TensorFlow/Keras module (``model/backend.py``),
  or a module that imports it at module level: napari's process never loads TensorFlow.
* The core (io, segmentation, learning, model, engine) imports neither Qt nor napari.
* No function or method is longer than 100 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_em_unet"
KERAS_MODULE = "napari_em_unet.model.backend"
CORE = ("io", "segmentation", "learning", "model", "engine", "analysis")
MAX_FUNCTION_LINES = 100


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _targets(module: str, node: ast.ImportFrom | ast.Import) -> set[str]:
    """The package modules an import statement names (``from . import x`` counts x)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.add(candidate if candidate in MODULES else base)
    return {t for t in found if t in MODULES and t != module}


def _imports(module: str, top_level_only: bool = False) -> set[str]:
    tree = TREES[module]
    nodes = tree.body if top_level_only else ast.walk(tree)
    return {
        t for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) for t in _targets(module, n)
    }


def _external(module: str) -> set[str]:
    """Top-level names of the third-party packages a module imports, anywhere in it."""
    names = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _cycles() -> list[list[str]]:
    graph = {m: _imports(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    assert _cycles() == []


def test_widgets_never_import_tensorflow():
    heavy = {KERAS_MODULE}
    grown = True
    while grown:  # every module that imports a heavy one at module level is heavy too
        grown = False
        for module in MODULES:
            if module not in heavy and _imports(module, top_level_only=True) & heavy:
                heavy.add(module)
                grown = True
    offenders = {
        m: sorted(_imports(m) & heavy)
        for m in MODULES
        if m.startswith("napari_em_unet._widgets") and _imports(m) & heavy
    }
    assert offenders == {}
    assert not any(_external(m) & {"tensorflow", "keras"} for m in MODULES if m != KERAS_MODULE)


@pytest.mark.parametrize("package", CORE)
def test_core_imports_neither_qt_nor_napari(package):
    gui = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy"}
    offenders = {
        m: sorted(_external(m) & gui)
        for m in MODULES
        if m.startswith(f"napari_em_unet.{package}") and _external(m) & gui
    }
    assert offenders == {}


def test_no_function_longer_than_a_screen():
    long = [
        f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for module, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_the_checks_see_the_package():
    """Guard against checks that pass because they found nothing."""
    assert len(MODULES) > 40
    assert "napari_em_unet.engine.client" in _imports("napari_em_unet._widgets.session")
