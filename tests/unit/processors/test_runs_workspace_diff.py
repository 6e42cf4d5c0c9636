"""The captured diff is what would merge: the repository's ignores and test caches stay out, tracked
files (even ignored ones) and every real change stay in. Real git on real directories."""

import os
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


def _snapshot(workspace_dir: Path, into: Path) -> Path:
    """The workspace as the sandbox snapshots it (``SNAPSHOT_COMMAND``: ``tar -C /workspace -czf - .``)."""
    into.write_bytes(
        subprocess.run(["tar", "-C", str(workspace_dir), "-czf", "-", "."], capture_output=True, check=True).stdout
    )
    return into


def _fresh_diff(repo: Path, snapshot: Path, scratch: Path) -> workspace.CapturedDiff:
    with snapshot.open("rb") as f:
        workspace.unpack(f, scratch / "tree", 10_000, 1 << 30)
    return workspace.diff(repo, scratch / "tree", scratch / "index")


def test_a_later_step_rewrites_only_what_changed_and_diffs_the_same(tmp_path: Path) -> None:
    """Each step used to unpack the whole snapshot into a new tree and rebuild git's index from
    nothing (every file written and hashed again). The tree and index are kept between the steps of
    an attempt: a step writes only what changed, and its diff is the one a fresh unpack gives."""
    repo = _repo(tmp_path)
    for i in range(300):
        (repo / "src" / f"m{i}.py").write_text(f"n = {i}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "many"], check=True)
    ws = tmp_path / "ws"
    shutil.copytree(repo, ws, ignore=shutil.ignore_patterns(".git"))
    tree, index = tmp_path / "work" / "tree", tmp_path / "work" / "index"

    def step(n: int) -> tuple[int, workspace.CapturedDiff]:
        snap = _snapshot(ws, tmp_path / f"s{n}.tgz")
        with snap.open("rb") as f:
            written = workspace.refresh(f, tree, index, 10_000, 1 << 30)
        kept = workspace.diff(repo, tree, index)
        fresh = _fresh_diff(repo, snap, tmp_path / f"fresh{n}")
        assert (kept.patch, kept.files) == (fresh.patch, fresh.files)
        return written, kept

    (ws / "src" / "app.py").write_text("print('v2')\n")
    written, first = step(1)
    assert written > 300 and first.files == ["src/app.py"]

    # same size, same (second-granular) mtime as the tar recorded before: still a change
    before = (ws / "src" / "m7.py").stat()
    (ws / "src" / "m7.py").write_text("n = 9\n")
    os.utime(ws / "src" / "m7.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    (ws / "src" / "m8.py").unlink()
    (ws / "src" / "new.py").write_text("fresh\n")
    written, second = step(2)
    assert written == 2  # m7.py and new.py; nothing else is written again
    assert sorted(second.files) == ["src/app.py", "src/m7.py", "src/m8.py", "src/new.py"]

    workspace.forget_tree(tree, index)  # a crash mid-sync (or a new clone): the next step starts over
    written, third = step(3)
    assert written > 300 and sorted(third.files) == sorted(second.files)
