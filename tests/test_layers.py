"""Folders are layers and imports point down (lazy, function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: layer -> rank; a module may import only from layers of lower rank (or its own).
RANKS = {
    "errors": 0,
    "config": 1,
    "circuits": 2, "protocols": 2, "runtime": 2, "telemetry": 2,
    "sampling": 3,
    "executors": 4,
    "cluster": 5,
    "jobs": 6, "pennylane": 6,
    "executor": 7,  # the user-facing namespace
    "qfleet": 8,  # the package's lazy public API
    "run_cli": 8, "ui": 8,  # `qfleet run`, `qfleet ui` (the command line registers them)
    "cli": 9,  # the command line (its demo uses the public API)
}  # fmt: skip


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qfleet"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qfleet"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("qfleet"))
    return found


def test_imports_point_down():
    upward = []
    for path in sorted((SRC / "qfleet").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        mine = _layer(module)
        assert mine in RANKS, f"{module}: layer {mine!r} has no rank in this test"
        for target in _imports(path):
            theirs = _layer(target)
            if theirs != mine and RANKS[theirs] >= RANKS[mine]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)
