"""Layers point one way: no import circle between packages or modules, and inference never imports training.

Every import of every module counts, function-local ones included (parsed with ``ast``, nothing is
imported). ``server/`` and ``distill/`` install as ``hand2world.server`` and ``hand2world.distill``.
A *package* is ``hand2world.<name>``: a subpackage (``hand2world.stream``) or a top-level module
(``hand2world.io``). See docs/architecture.md for the floors.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from hand2world.paths import REPO_ROOT

SOURCE_ROOTS = {"hand2world": "hand2world", "server": "hand2world.server", "distill": "hand2world.distill"}
INFERENCE = ("hand2world.stream", "hand2world.server", "hand2world.eval")
TRAINING = "hand2world.train"


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, prefix in SOURCE_ROOTS.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([prefix, *parts])] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (anywhere in the file)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, targets in graph.items():
        out[package_of(a)]
        for b in targets:
            if package_of(a) != package_of(b):
                out[package_of(a)].add(package_of(b))
    return dict(out)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _explain(comp: list[str], graph: dict[str, set[str]], modules: dict[str, set[str]]) -> str:
    lines = [" <-> ".join(comp)]
    for a in comp:
        for b in sorted(graph.get(a, set()) & set(comp)):
            why = sorted(f"{x} -> {y}" for x, ys in modules.items() for y in ys
                         if (x, y) == (a, b) or (package_of(x), package_of(y)) == (a, b))
            lines.append(f"  {a} -> {b}: {', '.join(why[:5])}")
    return "\n".join(lines)


def test_the_parser_sees_local_imports_and_the_known_layers():
    graph = import_graph()
    assert "hand2world.checkpoints" in graph["hand2world.stream.generator"]  # a function-local import
    assert "hand2world.train.windows" in graph["hand2world.distill.common"]  # distill sits on train
    assert "hand2world.models" in package_graph(graph)["hand2world.stream"]


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules():
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles between modules:\n" + "\n".join(_explain(c, graph, graph) for c in found)


def test_no_import_circle_between_packages():
    graph = import_graph()
    packages = package_graph(graph)
    found = circles(packages)
    assert not found, "import circles between packages:\n" + "\n".join(_explain(c, packages, graph) for c in found)


def test_inference_never_imports_training():
    bad = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                 if package_of(a) in INFERENCE and package_of(b) == TRAINING)
    assert not bad, f"{', '.join(INFERENCE)} must not import {TRAINING} (model folders: hand2world.checkpoints): {bad}"
