"""The provider interface: lifecycle only. Operations on a running sandbox (exec, files) go through
the supervisor client, identical for every provider.

Host side of the trust boundary, shared by every provider: each sandbox's control directory is a
small tmpfs of its own (so the sandbox sees ``/`` as its root in mountinfo, never a host path),
owned by the supervisor's host uid with mode 0700 (the agent's uid cannot enter it); the
supervisor's code is a read-only tmpfs too. The identity the control socket's peer must have
(``PeerIdentity``) is kept on the host, outside anything the sandbox can write.
"""

import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import stat
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from astraforge.sandbox.client import PeerIdentity, SupervisorClient
from astraforge.sandbox.hostmounts import locked, mount_tmpfs, remount_read_only, unmount
from astraforge.sandbox.profile import SUPERVISOR_DIR, SecurityProfile

SUPERVISOR_SOURCE = Path(__file__).resolve().parent.parent / "supervisor.py"
SUPERVISOR_START = Path(__file__).resolve().parent.parent / "supervisor_start.py"
SUPERVISOR_MODULE = "astraforge_supervisor"  # the supervisor's module name inside the sandbox
MAGIC = importlib.util.MAGIC_NUMBER
CONTROL_DIR_KB = 64  # a socket or two; nothing else belongs there


def traversable_by_others(path: Path) -> bool:
    """True when an unprivileged uid can reach ``path`` (every ancestor has o+x)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.exists())


def runtime_dir(state_dir: Path) -> Path:
    """Where control dirs and the supervisor copy live: under the state dir when sandbox uids can
    reach it, else a root-owned directory under /var/tmp (a checkout in /root is private)."""
    state_dir = Path(state_dir)
    if traversable_by_others(state_dir):
        return state_dir / "sandboxes"
    return Path("/var/tmp") / f"astraforge-{hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]}"


def supervisor_files() -> tuple[dict[str, bytes], bytes]:
    """The supervisor directory's files and what names them: the launcher as ``supervisor.py``, the
    supervisor as a module beside it, and its checked-hash bytecode for this host's interpreter
    (``sandbox/supervisor_start.py`` says why; a sandbox whose python differs compiles the source)."""
    source = SUPERVISOR_SOURCE.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        pyc = Path(tmp) / "supervisor.pyc"
        py_compile.compile(
            str(SUPERVISOR_SOURCE),
            cfile=str(pyc),
            dfile=f"{SUPERVISOR_DIR}/{SUPERVISOR_MODULE}.py",
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
        bytecode = pyc.read_bytes()
    files = {
        "supervisor.py": SUPERVISOR_START.read_bytes(),
        f"{SUPERVISOR_MODULE}.py": source,
        f"__pycache__/{SUPERVISOR_MODULE}.{sys.implementation.cache_tag}.pyc": bytecode,
    }
    identity = json.dumps([files["supervisor.py"].hex(), source.hex(), sys.implementation.cache_tag, MAGIC.hex()])
    return files, identity.encode()


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    image: str = "astraforge/sandbox:bookworm"
    profile: SecurityProfile = field(default_factory=SecurityProfile)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxHandle:
    sandbox_id: str
    provider: str
    control_dir: Path
    peer: PeerIdentity

    @property
    def client(self) -> SupervisorClient:
        return SupervisorClient(self.control_dir, self.peer)


class SandboxProvider(ABC):
    """Creates, finds and stops sandboxes. Every method is idempotent (safe to retry after a crash)."""

    name: str

    def __init__(self, state_dir: Path) -> None:
        self.runtime = runtime_dir(state_dir)
        self.control_root = self.runtime / "control"
        self.control_root.mkdir(parents=True, exist_ok=True)
        for p in (self.runtime, self.control_root):
            p.chmod(0o755)
        self.identity_root = self.runtime / "identity"  # host-only: what each control socket's peer must be
        self.identity_root.mkdir(mode=0o700, exist_ok=True)
        self._identities: dict[str, PeerIdentity] = {}
        # mounted read-only at /opt/astraforge; content-addressed, so deployments sharing this runtime
        # directory with another supervisor version each mount their own
        self.supervisor_dir = self.shared_files(*supervisor_files())

    def shared_files(self, files: dict[str, bytes], identity: bytes | None = None) -> Path:
        """A read-only tmpfs holding exactly ``files`` (world-readable; a name may hold one directory
        level), mounted once per content, or per ``identity`` if given (for content derived from it
        whose bytes may differ between processes, as compiled bytecode does)."""
        if identity is None:
            identity = json.dumps({k: v.hex() for k, v in sorted(files.items())}).encode()
        target = self.runtime / "shared" / hashlib.sha256(identity).hexdigest()[:16]
        with locked(self.runtime / ".mounts.lock"):
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.parent.chmod(0o755)
            if not os.path.ismount(target):
                size_kb = sum(len(v) for v in files.values()) // 1024 + 64
                mount_tmpfs(target, uid=0, gid=0, mode=0o755, size_kb=size_kb)
                for name, data in files.items():
                    (target / name).parent.mkdir(exist_ok=True)
                    (target / name).parent.chmod(0o755)  # whatever the umask: the sandbox's uid 0 must read it
                    (target / name).write_bytes(data)
                    (target / name).chmod(0o644)
                remount_read_only(target)
        return target

    def control_dir(self, sandbox_id: str, supervisor_uid: int) -> Path:
        """Host directory mounted at /run/astraforge: a tmpfs of its own, only the supervisor's
        (host uid ``supervisor_uid``, mode 0700), holding its socket and the egress socket."""
        path = self.control_root / sandbox_id
        with locked(self.runtime / ".mounts.lock"):
            path.mkdir(mode=0o700, exist_ok=True)
            if not os.path.ismount(path):
                mount_tmpfs(path, uid=supervisor_uid, gid=supervisor_uid, mode=0o700, size_kb=CONTROL_DIR_KB)
        return path

    def release_control_dir(self, sandbox_id: str) -> None:
        path = self.control_root / sandbox_id
        while os.path.ismount(path):
            unmount(path)
        shutil.rmtree(path, ignore_errors=True)
        (self.identity_root / f"{sandbox_id}.json").unlink(missing_ok=True)
        self._identities.pop(sandbox_id, None)

    def remember_peer(self, sandbox_id: str, peer: PeerIdentity) -> None:
        """Record who must answer on this sandbox's control socket (read back by ``handle``)."""
        path = self.identity_root / f"{sandbox_id}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(peer)))
        tmp.replace(path)
        self._identities[sandbox_id] = peer

    def _peer(self, sandbox_id: str) -> PeerIdentity | None:
        peer = self._identities.get(sandbox_id)
        if peer is None:
            try:
                peer = PeerIdentity(**json.loads((self.identity_root / f"{sandbox_id}.json").read_text()))
            except (OSError, ValueError, TypeError):
                return None
            self._identities[sandbox_id] = peer
        return peer

    @abstractmethod
    def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Start the sandbox (or return the one already running under this id) and wait until ready."""

    @abstractmethod
    def stop(self, sandbox_id: str) -> None:
        """Stop and remove the sandbox; nothing of it remains. No error if it is already gone."""

    @abstractmethod
    def list_ids(self) -> set[str]:
        """Ids of every sandbox of this provider that exists now (for reconciliation)."""

    def handle(self, sandbox_id: str) -> SandboxHandle | None:
        """The running sandbox's handle, from its control socket alone: no engine call on the exec
        path (``list_ids`` is the authority, for reconciliation)."""
        control = self.control_root / sandbox_id
        peer = self._peer(sandbox_id)
        try:
            present = stat.S_ISSOCK(os.lstat(control / SupervisorClient.SOCKET).st_mode)
        except OSError:
            present = False
        if peer is None or not present:
            return None
        return SandboxHandle(sandbox_id, self.name, control, peer)
