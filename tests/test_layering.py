"""The library never imports the application: chexflow/ does the work, flows orchestrate.

The import graph is read from the source with ``ast``: every ``import`` statement of every
module of ``chexflow/``, including those inside functions, with relative imports resolved.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import chexflow

PACKAGE = Path(chexflow.__file__).parent
APPLICATION = ("flows", "tasks", "deployments", "prefect")


def module_name(path: Path) -> str:
    """``chexflow/report/render.py`` -> ``chexflow.report.render``; a package's
    ``__init__.py`` is the package itself."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Every module an ``import`` in ``path`` names (absolute), with its line number.

    ``from X import y`` yields ``X.y`` as well as ``X``: ``y`` may be a submodule; names that
    are not modules are dropped by the caller.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source, node.lineno
            for alias in node.names:
                yield f"{source}.{alias.name}", node.lineno


def import_edges() -> dict[str, set[str]]:
    """Library module -> the library modules it imports, each with the packages above it
    (importing ``a.b.c`` runs ``a/b/__init__.py``), except the importer's own packages."""
    modules = library_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        targets: set[str] = set()
        for target, _line in imported_names(path, name):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                candidate = ".".join(parts[:i])
                if candidate in modules and candidate not in own:
                    targets.add(candidate)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def component(module: str) -> str:
    """The unit of the layer check: a top-level module or subpackage (``chexflow.data``)."""
    return ".".join(module.split(".")[:2])


def test_the_library_imports_nothing_of_the_application() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for name, path in library_modules().items()
        for target, line in imported_names(path, name)
        if target.split(".")[0] in APPLICATION or target.startswith("prefect_")
    ]
    assert offenders == []


def test_library_modules_import_no_cycle() -> None:
    assert cycles(import_edges()) == []


def test_library_subpackages_import_no_cycle() -> None:
    """Between subpackages too: ``chexflow.data`` must not import ``chexflow.config`` while
    ``chexflow.config`` imports ``chexflow.data``."""
    edges: dict[str, set[str]] = {}
    for source, targets in import_edges().items():
        edges.setdefault(component(source), set()).update(
            component(t) for t in targets if component(t) != component(source)
        )
    assert cycles(edges) == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "chexflow" / "sub" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "def late():\n    from flows.cli import app\n    from ..config import load_config\n"
        "    from . import sibling\n"
    )
    found = {t for t, _ in imported_names(source, "chexflow.sub.mod")}
    assert {"flows.cli", "chexflow.config.load_config", "chexflow.sub.sibling"} <= found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_the_library_does_not_load_prefect() -> None:
    modules = [m for m in library_modules() if m != "chexflow"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        + repr(APPLICATION)
        + ")\nassert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
