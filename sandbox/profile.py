"""The sandbox security profile, as data. Every provider applies the same profile; the conformance
and escape suites (tests/contracts, tests/security) check each provider against it.

Fixed (not overridable): read-only root, non-root uid for every command, no capability in any
set for commands (the supervisor, another user, keeps only CAP_SETUID/SETGID/KILL), no new
privileges, seccomp (Docker's default profile; for bubblewrap, ``sandbox/seccomp.py``), no network interface but
loopback. Overridable within bounds: sizes and limits.
"""

from pydantic import BaseModel, ConfigDict, Field

from astraforge.errors import ValidationError

HOME = "/home/sandbox"
# every sandbox's environment (a spec's env is added on top). No bytecode files: an agent that edits a
# module and re-runs within the same second at the same size would import the stale .pyc
BASE_ENV = {"HOME": HOME, "PYTHONDONTWRITEBYTECODE": "1"}
CONTROL_MOUNT = "/run/astraforge"
SUPERVISOR_DIR = "/opt/astraforge"
SUPERVISOR_PATH = f"{SUPERVISOR_DIR}/supervisor.py"
SUPERVISOR_SOCKET = f"{CONTROL_MOUNT}/supervisor.sock"


def supervisor_command(agent_uid: int) -> list[str]:
    """The sandbox's first process: the supervisor, by python in isolated mode (``-I``: no ``PYTHON*``
    variable of the image's environment, no user site), so what it imports as root, at start or
    later, comes only from the read-only supervisor directory and the interpreter's own library."""
    return ["python3", "-I", SUPERVISOR_PATH, SUPERVISOR_SOCKET, "--agent-uid", str(agent_uid)]


OVERRIDABLE = ("memory_mb", "cpus", "pids", "workspace_mb", "tmp_mb", "home_mb")
"""What a tenant may change (within each field's bounds); the uid and everything else is fixed."""


class SecurityProfile(BaseModel):
    """Limits of one sandbox. Bounds on each field are the platform's allowed overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uid: int = Field(default=1000, ge=1000, le=65534)
    """Non-root user the sandbox's commands run as (the supervisor is the sandbox's uid 0)."""
    memory_mb: int = Field(default=512, ge=64, le=8192)
    """Memory limit (the sandbox is killed by the OOM killer past it, nothing else is)."""
    cpus: float = Field(default=1.0, ge=0.01, le=4)
    """CPU share. At least 0.01: docker takes nano-CPUs and a CFS quota of at least 1 ms per 100 ms
    period, so a smaller value either rounds to ``NanoCpus=0`` (no limit at all) or fails the
    provision with the engine's message."""
    pids: int = Field(default=256, ge=16, le=4096)
    """Maximum number of processes/threads (fork bombs stop here)."""
    workspace_mb: int = Field(default=1024, ge=16, le=8192)
    """Size cap of the tmpfs /workspace."""
    tmp_mb: int = Field(default=256, ge=16, le=4096)
    """Size cap of the tmpfs /tmp."""
    home_mb: int = Field(default=256, ge=16, le=4096)
    """Size cap of the tmpfs $HOME (agents keep CODEX_HOME etc. here)."""

    @classmethod
    def with_overrides(cls, overrides: dict[str, str | int | float]) -> "SecurityProfile":
        """The default profile with caller overrides; anything unknown, fixed (the uid) or out of
        bounds is refused."""
        fixed = sorted(set(overrides) - set(OVERRIDABLE))
        if fixed:
            raise ValidationError(
                f"profile override refused: {', '.join(fixed)} cannot be set (allowed: {', '.join(OVERRIDABLE)})"
            )
        try:
            return cls(**overrides)
        except ValueError as e:
            raise ValidationError(f"profile override refused: {e}") from e

    def tmpfs(self) -> dict[str, int]:
        """Mount point -> size in MiB for every writable place in the sandbox."""
        return {"/workspace": self.workspace_mb, "/tmp": self.tmp_mb, HOME: self.home_mb}

    @property
    def ram_mb(self) -> int:
        """All the host memory the sandbox can hold: its processes' ``memory_mb`` plus its tmpfs
        caps (a tmpfs is memory). Docker's limit is this sum, so a full workspace never makes the
        OOM killer take the supervisor; bwrap (no cgroup) is bounded by the same parts; the
        per-tenant memory quota counts this."""
        return self.memory_mb + sum(self.tmpfs().values())
