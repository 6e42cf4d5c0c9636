"""The shared core (``astraforge/``) imports nothing from the API layer above it: the CLI starts the
app by name, creates keys through ``astraforge.keys`` and prints records through ``astraforge.audit``."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "astraforge"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_core_never_imports_the_api_layer() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(CORE.glob("*.py"))
        for name in _imports(path)
        if name == "astraforge.api" or name.startswith("astraforge.api.")
    }
    assert offenders == set()
