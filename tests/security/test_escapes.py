# ruff: noqa: E501  (the attempts read best as one table)
"""The escape suite: every attempt must be blocked, under every provider.

Each attempt runs inside a real sandbox (docker and bubblewrap) as the agent would. No attempt
sends traffic anywhere: the network checks only look at what the sandbox can see, or connect to
the sandbox's own loopback.
"""

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from astraforge.config import PROJECT_ROOT
from astraforge.sandbox.client import SupervisorError, SupervisorResult
from astraforge.sandbox.profile import SecurityProfile
from astraforge.sandbox.providers.base import SandboxSpec

SECRET = f"s3cr3t-{secrets.token_hex(8)}"
PROFILE = SecurityProfile(memory_mb=128, pids=64, workspace_mb=32, tmp_mb=16, home_mb=16)


@dataclass(frozen=True)
class Attempt:
    name: str
    shell: str
    blocked: Callable[[SupervisorResult], bool]


def failed(r: SupervisorResult) -> bool:
    return r.exit_code != 0


def out(r: SupervisorResult) -> str:
    return r.stdout.decode(errors="replace")


def py(code: str) -> str:
    return f"python3 - <<'PY'\n{code}\nPY"


ATTEMPTS = [
    Attempt("write to the root", "touch /evil", failed),
    # the root MOUNT is read-only, not merely owned by root: the kernel says so for "/" itself
    Attempt("the root is mounted read-only", py(
        "import os\nmounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
        "root = [m[5].split(',') for m in mounts if m[4] == '/'][-1]\n"
        "print('ro' in root, bool(os.statvfs('/').f_flag & os.ST_RDONLY))"), lambda r: out(r).split() == ["True", "True"]),
    Attempt("write into /usr/bin", "cp /bin/sh /usr/bin/evil", failed),
    Attempt("append to /etc/passwd", "echo 'x:x:0:0::/:/bin/sh' >> /etc/passwd", failed),
    Attempt("remount the root read-write", "mount -o remount,rw /", failed),
    Attempt("mount a filesystem", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m", failed),
    Attempt("unshare a user namespace", "unshare -U -r id", failed),
    Attempt("unshare a mount namespace", "unshare -m true", failed),
    Attempt("chroot", "chroot / true", failed),
    Attempt("become root with setuid", py("import os\nos.setuid(0)"), failed),
    Attempt("setuid binaries do not elevate", "grep -q 'NoNewPrivs:[[:space:]]*1' /proc/self/status", lambda r: r.exit_code == 0),
    Attempt("no capabilities at all, none to regain (inheritable, permitted, effective, bounding, ambient)",
            "grep ^Cap /proc/self/status", lambda r: [line.split()[1] for line in out(r).splitlines()] == ["0" * 16] * 5),
    Attempt("make a device node", "mknod /tmp/disk b 8 0", failed),
    Attempt("open a raw socket", py("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"), failed),
    Attempt("only a loopback interface", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", lambda r: out(r).split() == ["lo"]),
    Attempt("no route anywhere", "tail -n +2 /proc/net/route | wc -l", lambda r: out(r).strip() == "0"),
    Attempt("host loopback services are not reachable (Kafka port)",
            py("import socket\nsocket.create_connection(('127.0.0.1', 19092), timeout=2)"), failed),
    Attempt("host loopback services are not reachable (PostgreSQL port)",
            py("import socket\nsocket.create_connection(('127.0.0.1', 15432), timeout=2)"), failed),
    Attempt("no docker socket", "ls /var/run/docker.sock /run/docker.sock 2>/dev/null; find / -name 'docker.sock' 2>/dev/null",
            lambda r: "docker.sock" not in out(r)),
    Attempt("no host processes visible", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
            lambda r: all(word not in out(r) for word in ("java", "postgres", "dockerd", "pytest"))),
    Attempt("platform secrets are not in the environment", "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'",
            lambda r: SECRET not in out(r) and "ASTRAFORGE_" not in out(r)),
    Attempt("the project checkout is not visible", f"ls {PROJECT_ROOT} 2>&1; ls /var/cache/astraforge 2>&1",
            lambda r: "pyproject.toml" not in out(r) and "kafka" not in out(r)),
    Attempt("sysrq trigger", "echo b > /proc/sysrq-trigger", failed),
    Attempt("kernel sysctl", "echo 1 > /proc/sys/kernel/panic", failed),
    Attempt("load a kernel module", py(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.syscall(175, None, 0, b'')\nraise SystemExit(0 if r == 0 else 1)"), failed),
    Attempt("fork bomb stops at the pids limit", py(
        "import os, time\nn = 0\ntry:\n    while n < 10000:\n        if os.fork() == 0:\n            time.sleep(3)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"), lambda r: int(out(r).strip() or 0) < 1000),
    Attempt("memory bomb dies alone", py("b = bytearray(1024 ** 3)\nprint('allocated')"), lambda r: "allocated" not in out(r)),
    Attempt("disk fill stops at the tmpfs cap", "dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>&1; du -sm /workspace/fill",
            lambda r: int(out(r).split()[-2]) <= PROFILE.workspace_mb),
]  # fmt: skip


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def sandbox(request):
    provider = request.getfixturevalue(f"{request.param}_provider")
    os.environ["ASTRAFORGE_TEST_SECRET"] = SECRET  # present in the platform's environment, never in a sandbox
    sandbox_id = f"escape-{request.param}-{secrets.token_hex(4)}"
    handle = provider.create(SandboxSpec(sandbox_id, profile=PROFILE))
    yield handle
    provider.stop(sandbox_id)
    del os.environ["ASTRAFORGE_TEST_SECRET"]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
def test_attempt_is_blocked(sandbox, attempt: Attempt) -> None:
    result = sandbox.client.exec(shell=attempt.shell, timeout_s=60)
    assert attempt.blocked(result), (attempt.name, result.exit_code, result.stdout[-2000:], result.stderr[-2000:])
    assert sandbox.client.exec(shell="echo alive").stdout == b"alive\n", "the sandbox itself survives every attempt"


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/shadow", "/usr/lib/evil.so", "/run/astraforge/x"])
def test_file_upload_cannot_leave_the_writable_roots(sandbox, path: str) -> None:
    with pytest.raises(SupervisorError, match="forbidden_path"):
        sandbox.client.write(path, b"x")


def test_symlink_planted_by_the_agent_does_not_redirect_uploads(sandbox) -> None:
    sandbox.client.exec(shell="ln -sfn /etc /workspace/innocent")
    with pytest.raises(SupervisorError, match="forbidden_path"):
        sandbox.client.write("innocent/cron.d/x", b"x")
