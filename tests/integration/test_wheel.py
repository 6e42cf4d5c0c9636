"""The wheel built from pyproject carries every module: an editable install hides a package left
out of ``[tool.setuptools]``, so build the real wheel, install it into a fresh venv and import all."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from astraforge.config import PROJECT_ROOT

# the top-level folders the package maps onto ``astraforge.<folder>`` (pyproject package-dir)
PACKAGE_ROOTS = {"astraforge": "astraforge", "api": "astraforge.api", "producers": "astraforge.producers",
                 "processors": "astraforge.processors", "projections": "astraforge.projections",
                 "schemas": "astraforge.schemas", "sandbox": "astraforge.sandbox"}  # fmt: skip


def source_modules() -> set[str]:
    """Every importable module of the source tree, by its ``astraforge.*`` name."""
    names = set()
    for folder, package in PACKAGE_ROOTS.items():
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            parts = path.relative_to(PROJECT_ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            names.add(".".join((package, *parts)))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # from a clean copy: setuptools reuses an in-tree build/ directory, which can hold stale modules
    src = out / "src"
    shutil.copytree(
        PROJECT_ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".local", "build", "*.egg-info", "__pycache__", "node_modules", "web"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("astraforge-*.whl")
    return built


def test_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    files = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {f[:-3].replace("/", ".").removesuffix(".__init__") for f in files if f.endswith(".py")}
    assert source_modules() - in_wheel == set()
    assert any(f.startswith("astraforge/schemas/avro/") and f.endswith(".avsc") for f in files)
    assert any(f.startswith("astraforge/schemas/history/") for f in files)
    assert "astraforge/projections/schema.sql" in files


def test_every_module_imports_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
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
    # third-party dependencies come from this venv's site-packages on PYTHONPATH (no .pth files are
    # read from there, so the editable install of the checkout cannot shadow the wheel)
    deps = sysconfig.get_paths()["purelib"]
    modules = sorted(source_modules())
    script = (
        "import importlib, sys\nfor m in sys.argv[1:]:\n    mod = importlib.import_module(m)\n"
        "    assert '/venv/' in mod.__file__, (m, mod.__file__)\nprint(len(sys.argv) - 1)"
    )
    result = subprocess.run(
        [python, "-c", script, *modules],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(len(modules))
