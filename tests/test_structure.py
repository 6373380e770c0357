"""The package's import graph: a top-down stack with no cycles, and a torch-free base.

Read from the source (module-level imports only; an import inside a function runs when it is
called), so the test needs nothing imported. A cycle makes import order matter and hides
which module a part belongs to; torch in the base would make every command, a mistyped one
included, wait the second or more torch takes to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vaelab

PACKAGE = Path(vaelab.__file__).resolve().parent

# What `vaelab train|eval` loads to compose and check a config, and `vaelab compare` to read runs.
TORCH_FREE = ("vaelab.cli", "vaelab.validation", "vaelab.knobs", "vaelab.config_source", "vaelab.registry",
              "vaelab.errors", "vaelab.rundir", "vaelab.provenance", "vaelab.completion", "vaelab.progress")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports() -> dict[str, set[str]]:
    """Each vaelab module -> the modules it imports when it is imported (vaelab's and others')."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                imported.add(base)
                imported |= {f"{base}.{alias.name}" for alias in node.names}  # `from vaelab import metrics`
        graph[name] = imported
    for name, imported in graph.items():
        # importing a.b.c runs a and a.b first; a module's own packages are running already
        graph[name] = {parent for module in imported for parent in _with_parents(module)} - set(_with_parents(name))
    return graph


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def test_the_package_imports_without_cycles():
    graph = top_level_imports()
    internal = {name: {m for m in imported if m in graph} for name, imported in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for child in sorted(internal[name]):
            if state.get(child) == 1:
                # a package's __init__ importing its own submodule is not a cycle of the stack
                cycle = path[path.index(child):] + [child]
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    cycles.append(" -> ".join(cycle))
            elif child not in state:
                visit(child, [*path, child])
        state[name] = 2

    for name in sorted(internal):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_config_and_cli_modules_never_import_torch():
    graph = top_level_imports()
    for start in TORCH_FREE:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += [m for m in graph.get(name, ()) if m in graph]
        heavy = {m.split(".")[0] for name in seen for m in graph[name]} & {"torch", "pytorch_lightning", "lightning", "sklearn"}
        assert not heavy, f"{start} imports {heavy} at module level (through {sorted(seen)})"
