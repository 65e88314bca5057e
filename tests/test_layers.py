"""The package's layers, checked from the source: no import cycle, and imports only go down.

The rules (``docs/design.md``): the pure layers (``config``, ``planning``, ``hardware`` and the
foundation modules ``names``, ``models``, ``errors``) import nothing from ``nvml``,
``execution``, the simulator, the agent or the CLI; ``nvml`` imports only the foundation
modules from the domain (the simulator only where a node is opened or reset); ``execution``
never imports the simulator.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

import migkit

PACKAGE_ROOT = pathlib.Path(migkit.__file__).resolve().parent
PURE = (
    "migkit.config",
    "migkit.planning",
    "migkit.hardware",
    "migkit.names",
    "migkit.models",
    "migkit.errors",
    "migkit.files",
)
ABOVE_PURE = (
    "migkit.nvml",
    "migkit.execution",
    "migkit.simulator",
    "migkit.agent",
    "migkit.fleet",
    "migkit.cli",
    "migkit.commands",
)
FOUNDATION = ("migkit.models", "migkit.names", "migkit.errors")


def _module_name(path: pathlib.Path) -> str:
    parts = ["migkit", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """(imported migkit module, at module level?) for every import outside TYPE_CHECKING blocks."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue
            if isinstance(child, ast.Import):
                yield from ((a.name, top) for a in child.names if a.name.startswith("migkit"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if not base.startswith("migkit"):
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    yield (sub if sub in MODULES else base), top
            else:
                nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from walk(child, top and not nested)

    yield from walk(tree, True)


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {
        m: {target for target, top in _imports(m) if target in MODULES and target != m and (top or not top_level_only)}
        for m in MODULES
    }


def test_the_walk_sees_the_package() -> None:
    """The walker finds the layers' modules and their imports (so the checks below can fail)."""
    assert {"migkit.planning.plan", "migkit.execution.orchestrate", "migkit.nvml.node"} <= set(MODULES)
    graph = _graph(top_level_only=False)
    assert "migkit.planning.coverage" in graph["migkit.planning.plan"]
    assert "migkit.nvml.node" in graph["migkit.execution.orchestrate"]


def test_no_import_cycle_at_module_level() -> None:
    """Module-level imports among migkit's modules form no cycle."""
    graph = _graph(top_level_only=True)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, PURE)))
def test_pure_layers_import_nothing_above_them(module: str) -> None:
    """config, planning, hardware, names, models and errors never import nvml, execution, the
    simulator, the agent or the CLI, not even inside a function."""
    above = sorted({t for t, _ in _imports(module) if _within(t, ABOVE_PURE)})
    assert not above, f"{module} imports {above}"


_NVML_MODULES = sorted(m for m in MODULES if _within(m, ("migkit.nvml",)))


@pytest.mark.parametrize("module", _NVML_MODULES)
def test_the_nvml_layer_imports_only_the_foundation(module: str) -> None:
    """The NVML layer imports only models, names and errors from the domain (the simulator only
    to open or reset a simulated node)."""
    allowed = (*FOUNDATION, "migkit.nvml", "migkit._nvml_shim_cffi", "migkit.simulator")
    other = sorted({t for t, _ in _imports(module) if not _within(t, allowed)})
    assert not other, f"{module} imports {other}"
    top_level_simulator = sorted({t for t, top in _imports(module) if top and _within(t, ("migkit.simulator",))})
    assert not top_level_simulator, f"{module} imports the simulator at module level"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ("migkit.execution",))))
def test_the_apply_layer_never_imports_the_simulator(module: str) -> None:
    """A GPU reset is the node's job: the apply layer never reaches into the simulator."""
    found = sorted({t for t, _ in _imports(module) if _within(t, ("migkit.simulator",))})
    assert not found, f"{module} imports {found}"
