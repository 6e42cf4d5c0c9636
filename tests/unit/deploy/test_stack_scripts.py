"""The local stack scripts on a fresh machine: the Debian mirror is found in either apt source
format, and a failing step always says which step it was (never a silent exit)."""

import subprocess
from pathlib import Path

import pytest

from astraforge.config import PROJECT_ROOT

LOCAL = PROJECT_ROOT / "deploy" / "local"
DEB822 = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def mirror(etc: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL / "apt_mirror.sh"), str(etc)], capture_output=True, text=True)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


def test_deb822_only(etc: Path) -> None:
    """The case that broke `make test`: no sources.list at all, only *.sources stanzas."""
    (etc / "sources.list.d" / "debian.sources").write_text(DEB822)
    result = mirror(etc)
    assert (result.returncode, result.stdout) == (0, "http://mirror.example/debian\n"), result.stderr


def test_deb822_skips_deb_src_and_other_suites(etc: Path) -> None:
    (etc / "sources.list.d" / "a.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://old.example/debian\nSuites: bullseye\n\n"
        "# comment\nTypes: deb\nURIs: http://good.example/debian\nSuites: bookworm\n"
    )
    assert mirror(etc).stdout == "http://good.example/debian\n"


def test_one_line_format(etc: Path) -> None:
    (etc / "sources.list").write_text(
        "# a comment\ndeb http://other.example/debian bullseye main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert mirror(etc).stdout == "http://one.example/debian\n"


def test_one_line_in_list_d_wins_over_deb822(etc: Path) -> None:
    (etc / "sources.list.d" / "x.list").write_text("deb http://list.example/debian bookworm main\n")
    (etc / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert mirror(etc).stdout == "http://list.example/debian\n"


def test_no_source_is_a_clear_error(etc: Path) -> None:
    result = mirror(etc)
    assert result.returncode == 1 and "no deb source for bookworm" in result.stderr


def test_a_failing_step_names_itself(tmp_path: Path) -> None:
    script = tmp_path / "svc.sh"
    script.write_text(
        f'SERVICE=demo\nsource "{LOCAL / "common.sh"}"\nstep_one() {{ cat /nonexistent/file | wc -l; }}\n'
        "step_one\necho unreachable\n"
    )
    result = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "ASTRAFORGE_STATE_DIR": str(tmp_path / "state"),
            "ASTRAFORGE_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    assert result.returncode != 0 and "unreachable" not in result.stdout
    assert "[demo] error:" in result.stderr and "step step_one failed" in result.stderr and "svc.sh:3" in result.stderr


def test_a_private_cache_dir_is_made_traversable_for_the_sandbox_uid(tmp_path: Path) -> None:
    """`ASTRAFORGE_CACHE_DIR=$(mktemp -d)` is 0700: bwrap's unprivileged uid could not reach the rootfs."""
    import os

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    script = tmp_path / "svc.sh"
    script.write_text(f'SERVICE=demo\nsource "{LOCAL / "common.sh"}"\n')
    env = {"PATH": "/usr/bin:/bin", "ASTRAFORGE_STATE_DIR": str(tmp_path / "state"), "ASTRAFORGE_CACHE_DIR": str(cache)}
    assert subprocess.run(["bash", str(script)], env=env).returncode == 0
    assert cache.stat().st_mode & 0o001 or os.geteuid() != 0


def test_stop_never_signals_a_process_that_reused_the_services_pid(tmp_path: Path) -> None:
    """`stack.sh down` stops services by their pidfiles. A service that died earlier left its pid behind,
    and pids come back (pid_max 32768 here): stopping it must not signal whoever has that pid now."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pidfile, script = tmp_path / "svc.pid", tmp_path / "svc.sh"
        script.write_text(
            f'SERVICE=demo\nsource "{LOCAL / "common.sh"}"\n'
            f'pid_alive "{pidfile}" && echo alive || echo gone\nstop_pid "{pidfile}"\n'
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "ASTRAFORGE_STATE_DIR": str(tmp_path / "state"),
            "ASTRAFORGE_CACHE_DIR": str(tmp_path / "cache"),
        }
        for stale in (f"{bystander.pid}\n", f"{bystander.pid} 1\n"):  # a bare pid (old file), another start time
            pidfile.write_text(stale)
            result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
            assert result.stdout == "gone\n", result.stderr
            assert bystander.poll() is None and not pidfile.exists()
        pidfile.write_text(
            f"{bystander.pid} {(Path(f'/proc/{bystander.pid}/stat').read_text().rsplit(')', 1)[1].split()[19])}\n"
        )
        result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert result.stdout == "alive\n" and bystander.wait(25) == -15, result.stderr
    finally:
        bystander.kill()
        bystander.wait()


def test_unmount_under_leaves_no_mount_in_the_state_dir(tmp_path: Path) -> None:
    """bwrap sandboxes leave read-only tmpfs/overlay mounts in the state dir; `stack.sh down` removes
    them (deepest first), so the checkout can be deleted afterwards."""
    outer, inner = tmp_path / "state" / "sandboxes" / "a", tmp_path / "state" / "sandboxes" / "a" / "b"
    outer.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "astraforge-test", str(outer)], check=True)
    try:
        inner.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "astraforge-test", str(inner)], check=True)
        script = tmp_path / "svc.sh"
        script.write_text(f'SERVICE=demo\nsource "{LOCAL / "common.sh"}"\nunmount_under "{tmp_path / "state"}"\n')
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "ASTRAFORGE_STATE_DIR": str(tmp_path / "state"),
            "ASTRAFORGE_CACHE_DIR": str(tmp_path / "cache"),
        }
        assert subprocess.run(["bash", str(script)], env=env).returncode == 0
        mounts = Path("/proc/self/mounts").read_text()
        assert str(outer) not in mounts and str(inner) not in mounts
    finally:
        for m in (inner, outer):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
