"""The architecture as contracts: the layer order inside agent/ and coordinator/, and no
import circles anywhere. Imports inside functions count: hiding one there hides a circle,
it does not remove it. (agent never importing coordinator: tests/test_import_direction.py.)

Layers, low to high; a module imports its own sub-package, or a lower layer. Sub-packages
on one layer are independent of each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LAYERS = {
    "agent": [{"agent.paths", "agent.spec"}, {"agent.machine", "agent.parsers"}, {"agent.store"},
              {"agent.engine"}, {"agent.cluster", "agent.volunteer"}],
    "coordinator": [{"coordinator.errors"}, {"coordinator.matrix"}, {"coordinator.planning"},
                    {"coordinator.results"}, {"coordinator.reports"}, {"coordinator.cluster"},
                    {"coordinator.volunteers", "coordinator.bisect", "coordinator.site"}, {"coordinator.cli"}],
}


def module_names(root: Path = REPO) -> dict[str, Path]:
    """Every module of the two packages, by dotted name (packages by their __init__)."""
    found = {}
    for top in LAYERS:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (`from pkg import mod` is an edge to mod)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(module: str) -> tuple[str, int, str] | None:
    """(side, rank, sub-package) of a module, None for a package's own root."""
    side = module.split(".")[0]
    for rank, group in enumerate(LAYERS.get(side, [])):
        for unit in group:
            if module == unit or module.startswith(unit + "."):
                return side, rank, unit
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        here = layer_of(source)
        for target in sorted(targets):
            there = layer_of(target)
            if here is None or there is None or here[0] != there[0]:
                continue
            if there[1] > here[1] or (there[1] == here[1] and there[2] != here[2]):
                bad.append(f"{source} -> {target}")
    return bad


def unplaced(modules: dict[str, Path]) -> list[str]:
    """Modules that no layer names: a new sub-package must be given its place."""
    return [m for m in modules if m not in LAYERS and layer_of(m) is None]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_sits_on_a_layer():
    assert unplaced(module_names()) == []


def test_imports_follow_the_layer_order_inside_agent_and_coordinator():
    assert layer_violations(import_graph(module_names())) == []


def test_the_import_graph_has_no_circles():
    assert circles(import_graph(module_names())) == []


def test_the_contract_checks_catch_a_planted_circle_and_an_upward_import(tmp_path):
    (tmp_path / "agent" / "spec").mkdir(parents=True)
    (tmp_path / "agent" / "store").mkdir()
    for pkg in ("agent", "agent/spec", "agent/store"):
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "agent" / "spec" / "record.py").write_text("def f():\n    from agent.store import keys\n")
    (tmp_path / "agent" / "store" / "keys.py").write_text("from agent.spec import record\n")
    (tmp_path / "agent" / "store" / "a.py").write_text("from . import b\n")
    (tmp_path / "agent" / "store" / "b.py").write_text("import agent.store.a\n")
    graph = import_graph(module_names(tmp_path))
    assert layer_violations(graph) == ["agent.spec.record -> agent.store.keys"]
    assert circles(graph) == [["agent.spec.record", "agent.store.keys"], ["agent.store.a", "agent.store.b"]]
