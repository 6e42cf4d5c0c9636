"""No dead code: every function, class, method, property and import in the tree is referenced
somewhere (vulture's static reference check, over the sources, bench/ and tests/).

What only a framework or a name in a string reaches is listed here, with the reason. Fields of
models and dataclasses are not checked (pydantic and the JSON encoders read them by reflection).
"""

from pathlib import Path

from vulture import Vulture

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ["api", "astraforge", "bench", "processors", "producers", "projections", "sandbox", "schemas", "tests"]
FOLDERS += ["toolkit"]  # the SDK's public calls too: each is exercised by tests/toolkit
REACHED_BY_A_FRAMEWORK = {
    "@router.*": "FastAPI routes",
    "@*.exception_handler": "FastAPI error handlers",
    "@*.command": "typer commands",
    "@*.callback": "typer callbacks",
    "@field_validator": "pydantic validators",
    "@model_validator": "pydantic validators",
    "@pytest.fixture": "pytest fixtures (autouse, or by getfixturevalue)",
}
REACHED_BY_NAME = {
    "ConfiguredHeadTimeoutProtocol": "uvicorn imports it by the string astraforge.cli.HTTP",
    "provision": "Effects runs an effect as getattr(self, effect.kind)",
    "reattach": "Effects runs an effect as getattr(self, effect.kind)",
    "do_GET": "http.server calls it",
    "do_POST": "http.server calls it",
    "log_message": "http.server calls it",
    "wrap_model_call": "langchain calls an agent middleware's hook by name",
    "wrap_tool_call": "langchain calls an agent middleware's hook by name",
    "awrap_tool_call": "langchain calls an agent middleware's async hook by name",
    "upload_files": "deepagents' BaseSandbox builds write/edit on it",
    "download_files": "deepagents' BaseSandbox builds its file reads on it",
}
CHECKED = {"function", "class", "method", "property", "import", "unreachable_code"}


def test_nothing_in_the_tree_is_unreferenced() -> None:
    vulture = Vulture(ignore_names=list(REACHED_BY_NAME), ignore_decorators=list(REACHED_BY_A_FRAMEWORK))
    vulture.scavenge([str(ROOT / folder) for folder in FOLDERS])
    unused = [
        f"{Path(item.filename).relative_to(ROOT)}:{item.first_lineno}: {item.typ} {item.name}"
        for item in vulture.get_unused_code(min_confidence=60)
        if item.typ in CHECKED
    ]
    assert unused == []
