"""deploy/local/web.sh prunes old UI builds from its cache, but never the one a server is serving.

A build is cached as dist-<sources hash>; every new build prunes all but the newest few. A server
that had been up while five newer builds were made (helpers and CI share the cache) lost its
directory under it. A server holds a shared flock on its build's directory (`make run` runs the API
under `flock -so <dir>`), and the prune skips a directory it cannot lock exclusively.
"""

import fcntl
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from astraforge.config import PROJECT_ROOT

WEB_SH = PROJECT_ROOT / "deploy" / "local" / "web.sh"


def builds(cache: Path, n: int) -> list[Path]:
    """n fake builds, oldest first (mtimes a minute apart), and an unfinished one."""
    dirs = []
    for i in range(n):
        d = cache / "web" / f"dist-{i:016x}"
        (d / "assets").mkdir(parents=True)
        (d / "index.html").write_text("<!doctype html>")
        os.utime(d, (1_700_000_000 + 60 * i,) * 2)
        dirs.append(d)
    (cache / "web" / "dist-ffffffffffffffff.tmp").mkdir()
    return dirs


def prune(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ASTRAFORGE_CACHE_DIR": str(tmp_path / "cache"),
        "ASTRAFORGE_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("ASTRAFORGE_WEB_KEEP_BUILDS", None)
    done = subprocess.run(["bash", str(WEB_SH), "prune"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


@contextmanager
def served(build: Path) -> Iterator[None]:
    """What a running server holds on its build: a shared flock on the directory."""
    fd = os.open(build, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def test_prune_keeps_the_newest_five_and_the_build_a_server_holds(tmp_path: Path) -> None:
    dirs = builds(tmp_path / "cache", 8)
    with served(dirs[0]):
        done = prune(tmp_path)
    remaining = sorted(p.name for p in (tmp_path / "cache" / "web").iterdir() if p.name.startswith("dist-"))
    assert remaining == sorted([dirs[0].name, *(d.name for d in dirs[3:]), "dist-ffffffffffffffff.tmp"])
    assert (dirs[0] / "index.html").is_file()
    assert f"kept {dirs[0]}" in done.stderr


def test_a_build_no_server_holds_any_more_goes_at_the_next_prune(tmp_path: Path) -> None:
    dirs = builds(tmp_path / "cache", 6)
    with served(dirs[0]):
        prune(tmp_path)
    assert dirs[0].is_dir()
    prune(tmp_path)
    assert not dirs[0].exists()
    assert all(d.is_dir() for d in dirs[1:])
