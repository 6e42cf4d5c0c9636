"""The captured diff is what would merge: the repository's ignores and test caches stay out, tracked
files (even ignored ones) and every real change stay in. Real git on real directories."""

import shutil
import subprocess
from pathlib import Path

from astraforge.processors.runs import workspace


def _repo(root: Path) -> Path:
    repo = root / "base"
    (repo / "src").mkdir(parents=True)
    (repo / ".gitignore").write_text("build/\n")
    (repo / "src" / "app.py").write_text("print('v1')\n")
    (repo / "src" / "gone.py").write_text("x = 1\n")
    (repo / "build").mkdir()
    (repo / "build" / "keep.txt").write_text("tracked although ignored\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "add", "-f", "build/keep.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    return repo


def test_the_diff_leaves_out_ignored_files_and_caches(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    tree = tmp_path / "tree"
    shutil.copytree(repo, tree, ignore=shutil.ignore_patterns(".git"))
    (tree / "src" / "app.py").write_text("print('v2')\n")
    (tree / "src" / "gone.py").unlink()
    (tree / "src" / "new.py").write_text("y = 2\n")
    (tree / "build" / "keep.txt").write_text("changed\n")
    (tree / "build" / "out.o").write_bytes(b"\0obj")
    for cache in ("src/__pycache__/app.cpython-311.pyc", ".pytest_cache/v/cache/nodeids", ".hypothesis/x"):
        (tree / cache).parent.mkdir(parents=True, exist_ok=True)
        (tree / cache).write_bytes(b"\0cache")
    (tree / "src" / "stray.pyc").write_bytes(b"\0")

    captured = workspace.diff(repo, tree, tmp_path / "index")

    assert sorted(captured.files) == ["build/keep.txt", "src/app.py", "src/gone.py", "src/new.py"]
    assert b"__pycache__" not in captured.patch and b".pytest_cache" not in captured.patch
