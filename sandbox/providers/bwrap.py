"""bubblewrap provider: a daemonless sandbox per process tree, the default where no Docker engine answers.

What it isolates: new pid, mount, ipc, uts, cgroup and network namespaces (the network has only
loopback) inside a user namespace of its own that maps exactly two unprivileged host uids: the
supervisor's (``SUPERVISOR_HOST_UID``, uid 0 inside) and the agent's (``HOST_UID``, the profile's
uid inside). Creating further user namespaces is disabled (``user.max_user_namespaces`` is 0 in
that namespace, set before anything of the sandbox runs). The root is the cached rootfs, read-only;
/workspace, /tmp and $HOME are size-capped tmpfs; NO_NEW_PRIVS is set (bubblewrap always sets it).
The supervisor keeps CAP_SETUID/SETGID/KILL of that user namespace only; the agent's commands hold
no capability in any set and run as another uid, so they cannot signal, trace or replace the
supervisor, nor enter the control directory (the supervisor's host uid, mode 0700). Even an escape
from the namespaces lands as an unprivileged host uid, not root.

Why this shape: a user namespace created by bwrap maps a single uid, which cannot hold two users;
so the platform (root on the host) prepares the namespace itself (a holder process made by
``unshare --user``, whose uid_map/gid_map it writes), and bwrap runs inside it as its root via
``nsenter``, keeping only the capabilities the supervisor needs (--cap-drop ALL --cap-add ...).
The client's SO_PEERCRED check proves: the socket's listener runs as the supervisor's host uid in
this sandbox's pid namespace, i.e. it is this sandbox's supervisor (every bwrap supervisor has the
same host uid; the pid namespace tells them apart).

No host path in mountinfo: the root is a read-only overlay of the rootfs whose layers are named
through /proc/self/fd, and the control and supervisor directories are tmpfs roots.

Seccomp: ``sandbox/seccomp.py``'s filter (what docker's default profile refuses to a process
without capabilities), given to bwrap through ``--seccomp``; x86_64 only, elsewhere no sandbox starts.

What it does not: there is no cgroup, so memory is bounded per process (RLIMIT_AS) rather than for
the sandbox as a whole; the process limit (RLIMIT_NPROC) is counted per uid of the sandbox's own
user namespace. Use the docker (or kubernetes) provider where those matter.
"""

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

from astraforge.errors import AstraForgeError
from astraforge.sandbox.client import PeerIdentity
from astraforge.sandbox.hostmounts import locked, mount_overlay_read_only
from astraforge.sandbox.processes import ProcessRef
from astraforge.sandbox.profile import BASE_ENV, CONTROL_MOUNT, SUPERVISOR_DIR, supervisor_command
from astraforge.sandbox.providers.base import SandboxHandle, SandboxProvider, SandboxSpec, traversable_by_others
from astraforge.sandbox.seccomp import NoSeccompFilter, filter_program

PATH = "/usr/local/bin:/usr/bin:/bin"
HOST_UID = 61000  # unprivileged host uid the agent's commands map to (no host account needed)
SUPERVISOR_HOST_UID = 61001  # unprivileged host uid the supervisor (uid 0 inside) maps to
SUPERVISOR_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL", "CAP_CHOWN")  # CHOWN, SETPCAP: at start only
NO_USERNS = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'  # run as root of the sandbox's user namespace


class BwrapUnavailable(AstraForgeError, RuntimeError):
    """bubblewrap is not installed or cannot create namespaces here."""


class BwrapProvider(SandboxProvider):
    name = "bwrap"

    def __init__(self, state_dir, rootfs: Path, host_uid: int = HOST_UID, namespace: str = "astraforge") -> None:
        super().__init__(state_dir)
        self.host_uid = host_uid
        self.supervisor_uid = SUPERVISOR_HOST_UID
        self.rootfs = Path(rootfs)
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise BwrapUnavailable("bwrap is not installed (apt-get install bubblewrap)")
        if not (self.rootfs / "usr/bin/python3").exists():
            raise BwrapUnavailable(f"no sandbox rootfs at {self.rootfs} (deploy/local/rootfs.sh build)")
        if not traversable_by_others(self.rootfs):
            raise BwrapUnavailable(
                f"the sandbox rootfs {self.rootfs} is not reachable by the sandbox's unprivileged "
                "uid: a directory above it lacks o+x"
            )
        try:
            self.seccomp = filter_program()
        except NoSeccompFilter as e:
            raise BwrapUnavailable(str(e)) from e
        self._children: dict[str, subprocess.Popen] = {}  # ours to reap after stop
        self.pid_dir = Path(state_dir) / "bwrap" / namespace  # one deployment never sees another's
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.root = self._read_only_root()

    def _read_only_root(self) -> Path:
        """The rootfs as a read-only overlay of its own (mounted once per rootfs directory)."""
        st = self.rootfs.stat()
        target = self.runtime / "rootfs" / f"{st.st_dev:x}-{st.st_ino:x}"  # a rebuilt rootfs is a new directory
        empty = self.runtime / "rootfs" / "empty"
        with locked(self.runtime / ".mounts.lock"):
            if not os.path.ismount(target):
                for d in (target.parent, empty, target):
                    d.mkdir(mode=0o755, exist_ok=True)
                    d.chmod(0o755)
                mount_overlay_read_only(self.rootfs, empty, target)
        return target

    def _user_namespace(self, agent_uid: int) -> subprocess.Popen:
        """A process holding a new user namespace that maps exactly two host uids (and gids): the
        supervisor's as 0 and the agent's as ``agent_uid``. Kill it once bwrap has entered."""
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        holder = subprocess.Popen(["unshare", "--user", "--", "sleep", "60"], start_new_session=True, **quiet)
        own, deadline = os.readlink("/proc/self/ns/user"), time.monotonic() + 5
        try:
            while os.readlink(f"/proc/{holder.pid}/ns/user") == own:
                if holder.poll() is not None or time.monotonic() > deadline:
                    raise BwrapUnavailable("could not create a user namespace (unshare --user)")
                time.sleep(0.0005)
            mapping = f"0 {self.supervisor_uid} 1\n{agent_uid} {self.host_uid} 1\n".encode()
            for name in ("uid_map", "gid_map"):
                fd = os.open(f"/proc/{holder.pid}/{name}", os.O_WRONLY)
                try:
                    os.write(fd, mapping)  # one write: the kernel takes a map whole or not at all
                finally:
                    os.close(fd)
        except (OSError, BwrapUnavailable) as e:
            holder.kill()
            holder.wait()
            raise BwrapUnavailable(f"could not prepare the sandbox's user namespace: {e}") from e
        return holder

    def command(self, spec: SandboxSpec, status_fd: int, userns_pid: int, args_fd: int, seccomp_fd: int) -> list[str]:
        """The command line that starts the sandbox. bwrap stays the sandbox's pid 1, whose command
        line every process inside can read: its options (host paths) come from ``args_fd``
        (``bwrap_options``), so that line names none. ``seccomp_fd`` holds ``sandbox/seccomp.py``'s
        filter, installed for the supervisor and so for every command."""
        p = spec.profile
        return [
            "nsenter",
            f"--user=/proc/{userns_pid}/ns/user",
            "--setuid=0",
            "--setgid=0",
            "--",
            "/bin/sh",
            "-c",
            NO_USERNS,
            "sh",
            "prlimit",
            f"--as={p.memory_mb * 1024 * 1024}",
            f"--nproc={p.pids}",
            self.bwrap,
            "--args",
            str(args_fd),
            "--seccomp",
            str(seccomp_fd),
            "--json-status-fd",
            str(status_fd),
            *supervisor_command(p.uid),
        ]

    def bwrap_options(self, spec: SandboxSpec, control: Path) -> list[str]:
        """bwrap's options, read from a pipe (``--args``), never shown in the sandbox."""
        caps = [arg for cap in SUPERVISOR_CAPS for arg in ("--cap-add", cap)]
        argv = [
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            "--hostname",
            "sandbox",
            "--new-session",
            "--cap-drop",
            "ALL",
            *caps,
            "--ro-bind",
            str(self.root),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        for path, mb in spec.profile.tmpfs().items():
            argv += ["--perms", "0755", "--size", str(mb * 1024 * 1024), "--tmpfs", path]
        argv += [
            "--bind",
            str(control),
            CONTROL_MOUNT,
            "--ro-bind",
            str(self.supervisor_dir),
            SUPERVISOR_DIR,
            "--chdir",
            "/workspace",
            "--clearenv",
            "--setenv",
            "PATH",
            PATH,
            "--setenv",
            "USER",
            "sandbox",
        ]
        for key, value in {**BASE_ENV, **spec.env}.items():
            argv += ["--setenv", key, value]
        return argv

    def _pidfile(self, sandbox_id: str) -> Path:
        return self.pid_dir / f"{sandbox_id}.json"

    def _alive(self, sandbox_id: str) -> tuple[ProcessRef, ProcessRef] | None:
        """The sandbox's init (bwrap's child) and launcher, while its init still runs. Kept with their
        start times: a pid alone, read back later, may name an unrelated process by then."""
        try:
            info = json.loads(self._pidfile(sandbox_id).read_text())
        except (FileNotFoundError, ValueError):
            return None
        init, launcher = ProcessRef.from_json(info.get("init")), ProcessRef.from_json(info.get("launcher"))
        if init is None or launcher is None or not init.alive():
            return None
        return init, launcher

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        control = self.control_dir(spec.sandbox_id, self.supervisor_uid)
        if self._alive(spec.sandbox_id) is None:
            log = self.pid_dir / f"{spec.sandbox_id}.log"
            holder = self._user_namespace(spec.profile.uid)
            read_fd, write_fd = os.pipe()
            args_fd = _pipe_holding(b"".join(os.fsencode(a) + b"\0" for a in self.bwrap_options(spec, control)))
            seccomp_fd = _pipe_holding(self.seccomp)
            try:
                try:
                    with open(log, "wb") as stderr:
                        proc = subprocess.Popen(
                            self.command(spec, write_fd, holder.pid, args_fd, seccomp_fd),
                            pass_fds=(write_fd, args_fd, seccomp_fd),
                            start_new_session=True,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=stderr,
                            env={"PATH": PATH},  # bwrap (the namespace's pid 1) keeps its own environ: give it nothing
                        )
                except BaseException:
                    os.close(read_fd)
                    raise
                finally:
                    for fd in (write_fd, args_fd, seccomp_fd):
                        os.close(fd)
                try:
                    status = _read_status(read_fd, proc, timeout=10)
                except BaseException:
                    proc.kill()  # never leave a half-started sandbox (nor an unreaped child) behind
                    proc.wait()
                    raise
            finally:
                holder.kill()  # the namespace lives on in the sandbox's processes
                holder.wait()
            if status is None:
                proc.wait()
                self.release_control_dir(spec.sandbox_id)
                raise BwrapUnavailable(f"bwrap could not start sandbox {spec.sandbox_id}: {log.read_text().strip()}")
            child = status["child-pid"]
            refs = {"init": ProcessRef.of(child).to_json(), "launcher": ProcessRef.of(proc.pid).to_json()}
            self._pidfile(spec.sandbox_id).write_text(json.dumps(refs))
            self._children[spec.sandbox_id] = proc
            self.remember_peer(spec.sandbox_id, PeerIdentity.of(child, self.supervisor_uid))
        peer = self._peer(spec.sandbox_id)
        if peer is None:
            raise BwrapUnavailable(f"sandbox {spec.sandbox_id} runs but its supervisor's identity was not recorded")
        handle = SandboxHandle(spec.sandbox_id, self.name, control, peer)
        handle.client.wait_ready(timeout=20)
        return handle

    def stop(self, sandbox_id: str) -> None:
        refs = self._alive(sandbox_id)
        if refs:
            for ref in refs:  # SIGKILL to the namespace's init takes every process of the sandbox with it
                ref.kill()
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


def _pipe_holding(data: bytes) -> int:
    """A pipe's read end holding ``data``, for bwrap's ``--args`` and ``--seccomp`` (written whole
    before bwrap starts: a few KiB, well within a pipe's buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        if os.write(write_fd, data) != len(data):
            raise BwrapUnavailable("bwrap's options did not fit in a pipe")
    finally:
        os.close(write_fd)
    return read_fd


def _read_status(fd: int, proc: subprocess.Popen, timeout: float) -> dict | None:
    """The JSON object bwrap writes on its status fd once the sandbox exists (no newline follows),
    or None if bwrap exits or stalls first."""
    buf = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()  # not select(): a busy host process holds fds past FD_SETSIZE (1024)
    poller.register(fd, select.POLLIN)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if not poller.poll(50):
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
