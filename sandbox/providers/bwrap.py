"""bubblewrap provider: a daemonless sandbox per process tree, the default where no Docker engine answers.

What it isolates: new user, pid, mount, ipc, uts, cgroup and network namespaces (the network has
only loopback; no nested user namespaces); the root is the cached rootfs bound read-only; /workspace, /tmp and $HOME are
size-capped tmpfs; all capabilities are dropped and NO_NEW_PRIVS is set (bubblewrap always sets it);
the sandbox runs as an unprivileged host uid, so even an escape from its user namespace lands as
that uid, not root.

What it does not: there is no cgroup, so memory is bounded per process (RLIMIT_AS) rather than for
the sandbox as a whole, and the process limit (RLIMIT_NPROC) counts every process of the sandbox
uid on the host, i.e. it is shared by all bwrap sandboxes. No seccomp filter beyond the kernel's
defaults is installed. Use the docker (or kubernetes) provider where those matter.
"""

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

from astraforge.errors import AstraForgeError
from astraforge.sandbox.profile import CONTROL_MOUNT, HOME, SUPERVISOR_DIR, SUPERVISOR_PATH, SUPERVISOR_SOCKET
from astraforge.sandbox.providers.base import SandboxHandle, SandboxProvider, SandboxSpec, traversable_by_others

PATH = "/usr/local/bin:/usr/bin:/bin"
HOST_UID = 61000  # unprivileged host uid the sandbox maps to (no host account needed)


class BwrapUnavailable(AstraForgeError, RuntimeError):
    """bubblewrap is not installed or cannot create namespaces here."""


class BwrapProvider(SandboxProvider):
    name = "bwrap"

    def __init__(self, state_dir, rootfs: Path, host_uid: int = HOST_UID, namespace: str = "astraforge") -> None:
        super().__init__(state_dir)
        self.host_uid = host_uid
        self.rootfs = Path(rootfs)
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise BwrapUnavailable("bwrap is not installed (apt-get install bubblewrap)")
        if not (self.rootfs / "usr/bin/python3").exists():
            raise BwrapUnavailable(f"no sandbox rootfs at {self.rootfs} (deploy/local/rootfs.sh build)")
        if not traversable_by_others(self.rootfs):
            raise BwrapUnavailable(f"the sandbox rootfs {self.rootfs} is not reachable by the sandbox's unprivileged "
                                   "uid: a directory above it lacks o+x")  # fmt: skip
        self._children: dict[str, subprocess.Popen] = {}  # ours to reap after stop
        self.pid_dir = Path(state_dir) / "bwrap" / namespace  # one deployment never sees another's
        self.pid_dir.mkdir(parents=True, exist_ok=True)

    def command(self, spec: SandboxSpec, control: Path, status_fd: int) -> list[str]:
        p = spec.profile
        uid = str(p.uid)
        argv = ["setpriv", f"--reuid={self.host_uid}", f"--regid={self.host_uid}", "--clear-groups", "--inh-caps=-all",
                "prlimit", f"--as={p.memory_mb * 1024 * 1024}", f"--nproc={p.pids}",
                self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--new-session", "--cap-drop", "ALL",
                "--uid", uid, "--gid", uid,
                "--json-status-fd", str(status_fd),
                "--ro-bind", str(self.rootfs), "/", "--proc", "/proc", "--dev", "/dev"]  # fmt: skip
        for path, mb in p.tmpfs().items():
            argv += ["--perms", "0755", "--size", str(mb * 1024 * 1024), "--tmpfs", path]
        argv += ["--bind", str(control), CONTROL_MOUNT, "--ro-bind", str(self.supervisor_dir), SUPERVISOR_DIR,
                 "--chdir", "/workspace", "--clearenv", "--setenv", "HOME", HOME, "--setenv", "PATH", PATH,
                 "--setenv", "USER", "sandbox"]  # fmt: skip
        for key, value in spec.env.items():
            argv += ["--setenv", key, value]
        return [*argv, "python3", SUPERVISOR_PATH, SUPERVISOR_SOCKET]

    def _pidfile(self, sandbox_id: str) -> Path:
        return self.pid_dir / f"{sandbox_id}.json"

    def _alive(self, sandbox_id: str) -> dict | None:
        try:
            info = json.loads(self._pidfile(sandbox_id).read_text())
            os.kill(info["child_pid"], 0)
            return info
        except (FileNotFoundError, ValueError, KeyError, ProcessLookupError):
            return None

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        control = self.control_dir(spec.sandbox_id, self.host_uid)
        handle = SandboxHandle(spec.sandbox_id, self.name, control)
        if self._alive(spec.sandbox_id) is None:
            read_fd, write_fd = os.pipe()
            log = self.pid_dir / f"{spec.sandbox_id}.log"
            with open(log, "wb") as stderr:
                proc = subprocess.Popen(
                    self.command(spec, control, write_fd), pass_fds=(write_fd,), start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    env={"PATH": PATH},  # bwrap (the namespace's pid 1) keeps its own environ: give it nothing
                )  # fmt: skip
            os.close(write_fd)
            status = _read_status(read_fd, proc, timeout=10)
            if status is None:
                proc.wait()
                self.release_control_dir(spec.sandbox_id)
                raise BwrapUnavailable(f"bwrap could not start sandbox {spec.sandbox_id}: {log.read_text().strip()}")
            child = status["child-pid"]
            self._pidfile(spec.sandbox_id).write_text(json.dumps({"pid": proc.pid, "child_pid": child}))
            self._children[spec.sandbox_id] = proc
        handle.client.wait_ready(timeout=20)
        return handle

    def stop(self, sandbox_id: str) -> None:
        info = self._alive(sandbox_id)
        if info:
            # SIGKILL to the namespace's init takes every process of the sandbox with it
            for pid in (info["child_pid"], info["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self._alive(sandbox_id):
                time.sleep(0.01)
        child = self._children.pop(sandbox_id, None)
        if child is not None:
            child.wait(timeout=5)
        self._pidfile(sandbox_id).unlink(missing_ok=True)
        (self.pid_dir / f"{sandbox_id}.log").unlink(missing_ok=True)
        self.release_control_dir(sandbox_id)

    def list_ids(self) -> set[str]:
        return {p.stem for p in self.pid_dir.glob("*.json") if self._alive(p.stem)}


def _read_status(fd: int, proc: subprocess.Popen, timeout: float) -> dict | None:
    """The JSON object bwrap writes on its status fd once the sandbox exists (no newline follows),
    or None if bwrap exits or stalls first."""
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            try:
                return json.loads(buf)
            except ValueError:
                continue  # not complete yet
    finally:
        os.close(fd)
    if proc.poll() is None:
        proc.kill()
    return None
