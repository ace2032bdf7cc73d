"""The apps depend one way: ``webhooks`` and ``realtime`` on ``lifecycle``, never back (lifecycle/delivery.py
and lifecycle/following.py are the seams they register through)."""

from __future__ import annotations

import ast

from orchestrator.embedded import PROJECT_DIR


def imported_apps(module: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_lifecycle_imports_neither_webhooks_nor_realtime():
    offenders = {
        str(path.relative_to(PROJECT_DIR)): found
        for path in (PROJECT_DIR / "lifecycle").rglob("*.py")
        if (found := imported_apps(ast.parse(path.read_text())) & {"webhooks", "realtime"})
    }
    assert offenders == {}
