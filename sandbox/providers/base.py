"""The provider interface: lifecycle only. Operations on a running sandbox (exec, files) go through
the supervisor client, identical for every provider."""

import hashlib
import os
import shutil
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from astraforge.sandbox.client import SupervisorClient
from astraforge.sandbox.profile import SecurityProfile

SUPERVISOR_SOURCE = Path(__file__).resolve().parent.parent / "supervisor.py"


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

    @property
    def client(self) -> SupervisorClient:
        return SupervisorClient(self.control_dir / "supervisor.sock")


class SandboxProvider(ABC):
    """Creates, finds and stops sandboxes. Every method is idempotent (safe to retry after a crash)."""

    name: str

    def __init__(self, state_dir: Path) -> None:
        self.runtime = runtime_dir(state_dir)
        self.control_root = self.runtime / "control"
        self.control_root.mkdir(parents=True, exist_ok=True)
        for p in (self.runtime, self.control_root):
            p.chmod(0o755)
        # a root-owned copy every sandbox can read, mounted (as a directory) at /opt/astraforge
        self.supervisor_dir = self.runtime / "bin"
        self.supervisor_dir.mkdir(mode=0o755, exist_ok=True)
        shutil.copyfile(SUPERVISOR_SOURCE, self.supervisor_dir / "supervisor.py")
        (self.supervisor_dir / "supervisor.py").chmod(0o644)

    def control_dir(self, sandbox_id: str, owner_uid: int) -> Path:
        """Host directory mounted at /run/astraforge: holds the supervisor socket, nothing else."""
        path = self.control_root / sandbox_id
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, owner_uid, owner_uid)
        return path

    def release_control_dir(self, sandbox_id: str) -> None:
        shutil.rmtree(self.control_root / sandbox_id, ignore_errors=True)

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
        if not (control / "supervisor.sock").exists():
            return None
        return SandboxHandle(sandbox_id, self.name, control)
