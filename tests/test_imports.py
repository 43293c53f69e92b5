"""The pipeline is a library: nothing under harness/ but the CLI imports the CLI (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_module_but_the_cli_imports_the_cli():
    offenders = [
        str(path.relative_to(HARNESS.parent))
        for path in sorted(HARNESS.rglob("*.py"))
        if path.name != "cli.py"
        and any(m == "harness.cli" or m.startswith("harness.cli.") for m in imported_modules(path))
    ]
    assert offenders == []
    assert "harness.cli" not in imported_modules(HARNESS / "pipeline.py") | imported_modules(
        HARNESS / "calibration.py"
    )


def test_the_check_sees_an_import_of_the_cli(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from harness.cli import execute\n")
    assert "harness.cli" in imported_modules(module)
