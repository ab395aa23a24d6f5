"""The reference system and the examples use only the SDK's public API.

A private module (`todo_observability._observability`) or a private name
(`from todo_observability.logs import _helper`) imported from `reference_app/` or
`examples/` fails this test: what they show must work for any user of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "reference_app").rglob("*.py"), *(ROOT / "examples").rglob("*.py")])


def private_imports(path: Path) -> list[str]:
    """`module` or `module.name` of every private SDK import in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for dotted in [*modules, *names]:
            parts = dotted.split(".")
            if parts[0] == "todo_observability" and any(p.startswith("_") for p in parts[1:]):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                found.append(f"{where}:{node.lineno}: {dotted}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_public_sdk_names_are_imported(path: Path) -> None:
    assert private_imports(path) == []


def test_the_check_sees_private_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import todo_observability._observability\n"
        "from todo_observability.logs import _NO_LOCK, get_logger\n"
        "from todo_observability import configure\n"
    )
    assert [line.split(": ")[1] for line in private_imports(sample)] == [
        "todo_observability._observability",
        "todo_observability.logs._NO_LOCK",
    ]
