"""Dependencies point down: every module imports, no import cycle, no import into a higher layer.

The imports of every module under ``src/ccsam`` (function-level ones included) are read with ``ast``
and checked against the layer table below (``docs/architecture.md``). A package may import its own
modules and any package of a *lower* layer; packages of the same layer do not import each other.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lower numbers are lower layers. Top-level modules count as packages of their own.
LAYERS: dict[str, int] = {
    "errors": 0, "_version": 0,
    "atomic_io": 1, "safe_load": 1, "checks": 1, "strict_json": 1,
    "distributed": 1,                    # torchrun process group and collectives (torch only)
    "losses": 2, "models": 2,            # building blocks; their registries are the config's vocabulary
    "config": 3,
    "data": 4,
    "method": 5, "evaluation": 5,        # CC-SAM math; prediction + metrics
    "optim": 6, "functional": 6,         # optimisers over the method; the public facade of the method
    "training": 7,
    "analysis": 8, "tuning": 8,          # probes trained models and run folders; searches over training runs
    "reporting": 9,
    "cli": 10,
    "__init__": 11,                      # the package's own re-exports
    "__main__": 11,                      # `python -m ccsam` / `torchrun -m ccsam`
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "ccsam").rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The ``ccsam`` modules that ``name`` imports anywhere in its body (resolved to existing modules)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("ccsam") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer_key(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_has_a_layer_and_imports():
    unknown = sorted({_layer_key(n) for n in MODULES} - set(LAYERS))
    assert not unknown, f"add {unknown} to LAYERS (and to docs/architecture.md)"
    for name in MODULES:
        importlib.import_module(name)


def test_imports_only_point_down():
    upward = [
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if _layer_key(a) != _layer_key(b) and LAYERS[_layer_key(b)] >= LAYERS[_layer_key(a)]
    ]
    assert not upward, "imports into the same or a higher layer:\n" + "\n".join(sorted(upward))


def test_there_is_no_import_cycle():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
