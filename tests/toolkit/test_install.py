"""``pip install ./toolkit`` stands alone: the built wheel, in a fresh venv with only its own
dependencies on the path, imports without the platform, and no toolkit module imports
``astraforge`` (DESIGN §1: the toolkit never imports the platform's packages)."""

import ast
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from astraforge.config import PROJECT_ROOT

TOOLKIT = PROJECT_ROOT / "toolkit"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toolkit-wheel")
    src = out / "src"  # a clean copy: an in-tree build/ directory can hold stale modules
    shutil.copytree(TOOLKIT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        # this venv's setuptools (a dev dependency): an isolated build would fetch one first
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("astraforge_toolkit-*.whl")
    return built


def test_the_wheel_holds_every_module_and_declares_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line for line in whl.read(metadata).decode().splitlines() if line.startswith("Requires-Dist")]
    modules = {f"astraforge_toolkit/{p.name}" for p in (TOOLKIT / "astraforge_toolkit").glob("*.py")}
    assert modules <= names
    assert any(r.startswith("Requires-Dist: httpx") for r in requires)
    assert any("deepagents" in r and 'extra == "deepagents"' in r for r in requires)
    assert not [r for r in requires if r.removeprefix("Requires-Dist: ").startswith("astraforge")]


def test_it_imports_in_a_fresh_venv_without_the_platform(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, str(wheel)],
        check=True,
        capture_output=True,
    )
    # httpx and deepagents from this venv's site-packages on PYTHONPATH: no .pth file is read from
    # there, so the editable install of the platform is not importable (checked below)
    script = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]:\n"
        "    assert '/venv/' in importlib.import_module(m).__file__, m\n"
        "assert not [m for m in sys.modules if m == 'astraforge' or m.startswith('astraforge.')], sys.modules\n"
        "try:\n    import astraforge\nexcept ModuleNotFoundError:\n    print('standalone')\n"
    )
    # the core (what `pip install ./toolkit` without extras serves); backend and tools, which
    # import deepagents, are covered by the source check below
    modules = [f"astraforge_toolkit.{p.stem}" for p in toolkit_sources() if p.stem not in ("backend", "tools")]
    modules.insert(0, "astraforge_toolkit")
    result = subprocess.run(
        [python, "-c", script, *modules],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "standalone"


def toolkit_sources() -> list[Path]:
    return [p for p in sorted((TOOLKIT / "astraforge_toolkit").glob("*.py")) if p.stem != "__init__"]


def test_no_toolkit_module_imports_the_platform() -> None:
    """Also the modules a fresh interpreter would not reach (e.g. imported inside a function)."""
    for path in toolkit_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n == "astraforge" or n.startswith("astraforge.")], (path, names)
