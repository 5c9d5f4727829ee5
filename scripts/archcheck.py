#!/usr/bin/env python3
"""Report the package's shape against the size and layering rules of STYLE.md.

Lists modules over MAX_MODULE lines, functions over MAX_FUNCTION lines (multi-line
string literals other than docstrings, i.e. SQL text, are not counted), upward
imports across layers and import cycles between modules. Prints one finding a
line and exits 1 when there is any, so it can become a test once the tree is clean.

Usage: python scripts/archcheck.py [package-dir]
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE = 500
MAX_FUNCTION = 80

# Each layer may import only layers with a lower or equal rank.
LAYERS = {"core": 0, "archive": 1, "trust": 2, "oci": 3, "apply": 4, "ops": 5, "cli": 6}
# Infrastructure anyone may import; it imports only other infrastructure.
INFRASTRUCTURE = frozenset({"errors", "faults", "progress", "atomic", "inputfile", "schemas"})


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. kitbuilder.apply.db
    path: Path
    tree: ast.Module
    lines: int


def load(package: Path) -> list[Module]:
    modules = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        text = path.read_text(encoding="utf-8")
        modules.append(Module(".".join(parts), path, ast.parse(text), len(text.splitlines())))
    return modules


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None for the package root."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1]


def string_lines(node: ast.AST, docstrings: set[int]) -> int:
    """Lines taken by multi-line string literals (SQL text) under node, docstrings excluded."""
    total = 0
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and id(child) not in docstrings
            and child.end_lineno is not None
            and child.end_lineno > child.lineno
        ):
            total += child.end_lineno - child.lineno + 1
    return total


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def long_functions(module: Module) -> list[str]:
    docstrings = docstring_nodes(module.tree)
    findings = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                length = child.end_lineno - child.lineno + 1 - string_lines(child, docstrings)
                if length > MAX_FUNCTION:
                    findings.append(f"function {module.name}:{name} {length} lines")
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(module.tree, "")
    return findings


def imported(module: Module, known: set[str], top_level_only: bool) -> set[str]:
    """Modules of the package that module imports (resolved to known module names)."""
    nodes = module.tree.body if top_level_only else list(ast.walk(module.tree))
    names: set[str] = set()
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # "from kitbuilder import errors" imports a module; "from x import name" the module x.
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in known else base)
    resolved = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module.name:
            resolved.add(name)
    return resolved


def upward_imports(modules: list[Module]) -> list[str]:
    known = {m.name for m in modules}
    findings = []
    for module in modules:
        source = layer_of(module.name)
        for target in sorted(imported(module, known, top_level_only=False)):
            dest = layer_of(target)
            if dest is None or dest == source:
                continue
            if dest in INFRASTRUCTURE:
                continue
            if source in INFRASTRUCTURE:
                findings.append(f"upward import {module.name} (infrastructure) -> {target}")
            elif source in LAYERS and dest in LAYERS and LAYERS[dest] > LAYERS[source]:
                findings.append(f"upward import {module.name} ({source}) -> {target} ({dest})")
    return findings


def cycles(modules: list[Module]) -> list[str]:
    """Strongly connected components of the import graph (Tarjan).

    Imports inside functions and under TYPE_CHECKING count: deferring an import
    hides a cycle from the interpreter, not from the reader.
    """
    known = {m.name for m in modules}
    graph = {m.name: imported(m, known, top_level_only=False) for m in modules}
    # A package's __init__ importing its own submodules is not a cycle worth reporting.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not (t.startswith(name + ".") and name != "kitbuilder")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return [f"import cycle {' <-> '.join(c)}" for c in sorted(components)]


def main(argv: list[str]) -> int:
    package = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "kitbuilder"
    modules = load(package)
    findings = [f"module {m.name} {m.lines} lines" for m in modules if m.lines > MAX_MODULE]
    for module in modules:
        findings.extend(long_functions(module))
    findings.extend(upward_imports(modules))
    findings.extend(cycles(modules))
    for line in findings:
        print(line)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
