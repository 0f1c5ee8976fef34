"""The package's import graph: ``qa`` never imports ``ui``, and no module imports itself in a ring.

Every import statement counts, also those inside functions and under
``TYPE_CHECKING``: a lazy import hides a cycle from Python, not from a reader
of the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qa", "ui")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import sub`` points at ``pkg.sub``)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base]).strip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            ring = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                ring.append(w)
                if w == v:
                    break
            if len(ring) > 1:
                found.append(sorted(ring))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_modules_form_layers_without_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "qa.readers.text" in graph["qa.readers"]
    assert cycles(graph) == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles(graph))


def test_the_library_never_imports_the_web_chat() -> None:
    graph = import_graph()
    offenders = {
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith("qa")
        for t in targets
        if t == "ui" or t.startswith("ui.")
    }
    assert not offenders


def test_the_check_catches_the_rings_it_guards_against() -> None:
    """Each import that once closed a ring, put back, is reported."""
    for module, target in [
        ("qa.readers.text", "qa.corpus"),  # the text reader taking its decoding from the corpus walk
        ("qa.types", "qa.readers"),  # the data types taking Layout from the readers
        ("qa.export", "qa.embed"),  # the exporter taking the ONNX encoder from the module that loads exports
    ]:
        graph = import_graph()
        graph[module].add(target)
        assert any(module in ring and target in ring for ring in cycles(graph)), (module, target)
