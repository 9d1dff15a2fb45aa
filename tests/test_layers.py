"""Layers run one way (cli -> settings -> core) and no module of the package imports itself
back through others. Every ``import`` counts, at module level or inside a function (a lazy
import still runs before the code that needs it), and so does a string naming a module of the
package (modules loaded with ``importlib`` by name)."""

from __future__ import annotations

import ast
from pathlib import Path

import stereoq

PACKAGE_DIR = Path(stereoq.__file__).parent
ENTRY_POINTS = {"stereoq.__main__"}
"""Modules that only start the CLI."""
KNOWN_PACKAGE_EDGES: set[tuple[str, str]] = set()
"""Edges that close a circle between subpackages, still to remove (none today)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """``name`` or the nearest enclosing module of the package (``a.b.func`` -> ``a.b``)."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imported(module: str, path: Path) -> set[str]:
    """The package's modules that ``module`` imports, with the packages whose ``__init__``
    each of those runs first (except ``module``'s own enclosing packages)."""
    is_package = path.name == "__init__.py"
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names += [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and node.value in MODULES:
            names.append(node.value)
    deps: set[str] = set()
    for name in names:
        owner = _owner(name) if name.startswith("stereoq") else None
        if owner is not None:
            deps |= {owner} | (_ancestors(owner) - {"stereoq"})
    return deps - {module} - _ancestors(module)


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_package() -> None:
    assert "stereoq.cli" in GRAPH and "stereoq.engine.loop" in GRAPH
    assert "stereoq.engine.stage" in GRAPH["stereoq.engine.loop"]
    assert "stereoq.stages.qat" in GRAPH["stereoq.stages"]
    assert "stereoq.engine.loop" in GRAPH["stereoq.stages"]  # imported inside a function


def test_core_never_imports_the_cli() -> None:
    offenders = {
        module: sorted(dep for dep in deps if _in(dep, "stereoq.cli"))
        for module, deps in GRAPH.items()
        if not _in(module, "stereoq.cli") and module not in ENTRY_POINTS
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_settings_never_import_the_cli() -> None:
    for module, deps in GRAPH.items():
        if _in(module, "stereoq.settings"):
            assert not any(_in(dep, "stereoq.cli") for dep in deps), module


def test_no_import_cycles() -> None:
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_subpackages_form_layers() -> None:
    packages: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        source = ".".join(module.split(".")[:2])
        for dep in deps:
            target = ".".join(dep.split(".")[:2])
            if target not in (source, "stereoq"):
                packages.setdefault(source, set()).add(target)
    for source, target in KNOWN_PACKAGE_EDGES:
        assert target in packages.get(source, ()), f"{source} -> {target} is gone: unlist it"
        packages[source].discard(target)
    assert "stereoq.settings" in packages["stereoq.cli"]
    assert "stereoq.settings" not in packages["stereoq.models"]
    cycle = _cycle(packages)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_a_cycle_is_reported() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
