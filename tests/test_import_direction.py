"""One direction of imports: coordinator may import agent, agent never imports coordinator,
so an agent installs and runs on a volunteer's box without any coordinator code path."""
from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "agent"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_no_agent_module_imports_the_coordinator_even_inside_a_function():
    offenders = [f"{path.relative_to(AGENT.parent)}:{line}: {name}"
                 for path in sorted(AGENT.rglob("*.py")) for line, name in _imports(path)
                 if name == "coordinator" or name.startswith("coordinator.")]
    assert offenders == []


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from coordinator.planning.plan import Plan\n    import coordinator.cli.main\n")
    assert [name for _, name in _imports(module)] == ["coordinator.planning.plan", "coordinator.cli.main"]
