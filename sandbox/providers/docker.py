"""Docker provider: one hardened container per sandbox, via the docker SDK.

Containers are named ``af-<sandbox id>`` and labelled ``astraforge.sandbox_id``, so a create retried
after a crash finds the first one instead of starting a second, and reconciliation can list them.
The ``astraforge.namespace`` label (the deployment's topic prefix) keeps deployments sharing one
engine from reaping each other's sandboxes.
Network mode ``none``: the container has only a loopback interface.

Two users inside (see ``sandbox/supervisor.py``): the container starts as root with every
capability dropped but CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL, and no-new-privileges;
the supervisor (pid 1) keeps SETUID/SETGID/KILL in its effective set only and empties the
bounding set, and starts each command as the profile's uid, whose capability sets are all empty.
The control directory is the host tmpfs owned by root (the supervisor's host uid, since the
engine maps no user namespace), mode 0700. The client's SO_PEERCRED check therefore proves: the
socket's listener is a root process in this container's pid namespace, i.e. this container's
supervisor; the agent's processes are uid ``profile.uid`` and never pass it.

No host path in mountinfo: the control and supervisor directories are tmpfs roots, /etc/hosts,
/etc/hostname and /etc/resolv.conf come from a shared tmpfs (the engine's own would be files
under its data root), the cgroup namespace is private, and no --init binary is bind-mounted from
the host. The one exception is the engine's overlay root: its super options (lowerdir, upperdir,
workdir) name the engine's layer directories on the host; only the engine can change that.
"""

import functools
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound

from astraforge.errors import AstraForgeError
from astraforge.sandbox.client import PeerIdentity
from astraforge.sandbox.profile import BASE_ENV, CONTROL_MOUNT, SUPERVISOR_DIR, supervisor_command
from astraforge.sandbox.providers.base import SandboxHandle, SandboxProvider, SandboxSpec

LABEL = "astraforge.sandbox_id"
NAMESPACE_LABEL = "astraforge.namespace"
SUPERVISOR_UID = 0  # the container's root is the host's root (no user namespace remapping)
SUPERVISOR_CAPS = ["SETUID", "SETGID", "SETPCAP", "KILL"]
ETC_FILES = {"hosts": b"127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n", "hostname": b"sandbox\n", "resolv.conf": b""}


class DockerUnavailable(AstraForgeError, ConnectionError):
    """No Docker engine answers."""


@functools.cache
def engine(docker_host: str | None) -> docker.DockerClient:
    """One client per engine per process (its connection pool is thread-safe): a client per provider
    left a pool of open sockets behind each provider the process dropped. ``DockerUnavailable`` (not
    cached) when no engine answers."""
    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        client.ping()
    except DockerException as e:
        raise DockerUnavailable(f"no Docker engine at {docker_host or 'DOCKER_HOST'}: {e}") from e
    return client


class DockerProvider(SandboxProvider):
    name = "docker"

    def __init__(self, state_dir, docker_host: str | None = None, namespace: str = "astraforge") -> None:
        super().__init__(state_dir)
        self.namespace = namespace
        self.client = engine(docker_host)
        self.etc_dir = self.shared_files(ETC_FILES)

    @staticmethod
    def container_name(sandbox_id: str) -> str:
        return f"af-{sandbox_id}"

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        """Three engine calls for a new sandbox (create, start, inspect for the supervisor's pid): the
        engine is what caps creates per second here, and docker-py's ``containers.run`` plus a lookup
        by name first made five. A create retried after a crash meets the first one's name (409)
        and starts and inspects that container instead."""
        control = self.control_dir(spec.sandbox_id, SUPERVISOR_UID)
        api = self.client.api
        name = self.container_name(spec.sandbox_id)
        try:
            try:
                container_id = api.create_container(**self._container_config(spec, control))["Id"]
            except APIError as e:
                if e.status_code != 409:  # 409: this name exists (a create retried, or a concurrent one)
                    raise
                container_id = name
            api.start(container_id)  # a running container answers 304: nothing to do
            attrs = api.inspect_container(container_id)
        except APIError as e:  # e.g. the image is missing, or a concurrent stop removed the container
            self.release_control_dir(spec.sandbox_id)
            raise AstraForgeError(f"docker could not start sandbox {spec.sandbox_id}: {e.explanation}") from e
        pid = attrs["State"]["Pid"]
        if not pid:
            logs = api.logs(container_id, tail=20).decode(errors="replace").strip()
            raise AstraForgeError(f"sandbox {spec.sandbox_id} is not running: {logs or attrs['State']}")
        peer = PeerIdentity.of(pid, SUPERVISOR_UID)
        self.remember_peer(spec.sandbox_id, peer)
        handle = SandboxHandle(spec.sandbox_id, self.name, control, peer)
        handle.client.wait_ready(timeout=20)
        return handle

    def _container_config(self, spec: SandboxSpec, control: Path) -> dict:
        """The engine's create request for the hardened container (the module docstring says why each part)."""
        p = spec.profile
        tmpfs = {path: f"size={mb}m,uid={p.uid},gid={p.uid},mode=0755,nosuid,nodev" for path, mb in p.tmpfs().items()}
        binds = {
            str(control): {"bind": CONTROL_MOUNT, "mode": "rw"},
            str(self.supervisor_dir): {"bind": SUPERVISOR_DIR, "mode": "ro"},
            **{str(self.etc_dir / name): {"bind": f"/etc/{name}", "mode": "ro"} for name in ETC_FILES},
        }
        host_config = self.client.api.create_host_config(
            read_only=True,
            tmpfs=tmpfs,
            cap_drop=["ALL"],
            cap_add=SUPERVISOR_CAPS,
            security_opt=["no-new-privileges"],
            cgroupns="private",
            network_mode="none",
            pids_limit=p.pids,
            mem_limit=f"{p.ram_mb}m",  # processes' memory_mb + the tmpfs they may fill
            memswap_limit=f"{p.ram_mb}m",
            nano_cpus=int(p.cpus * 1e9),
            binds=binds,
        )
        return {
            "image": spec.image,
            "command": supervisor_command(p.uid),
            "name": self.container_name(spec.sandbox_id),
            "hostname": "sandbox",  # not the engine's container id
            "labels": {LABEL: spec.sandbox_id, NAMESPACE_LABEL: self.namespace},
            "detach": True,
            "user": "0:0",
            "environment": {**BASE_ENV, **spec.env},
            "working_dir": "/workspace",
            "host_config": host_config,
        }

    def stop(self, sandbox_id: str) -> None:
        try:
            self.client.containers.get(self.container_name(sandbox_id)).remove(force=True)
        except NotFound:
            pass
        except APIError as e:
            if e.status_code != 409:  # 409: a removal is already under way (a concurrent stop)
                raise
        self.release_control_dir(sandbox_id)

    def list_ids(self) -> set[str]:
        # sparse: one list call, no per-container inspect (which races with concurrent removals)
        found = self.client.containers.list(
            all=True, sparse=True, filters={"label": f"{NAMESPACE_LABEL}={self.namespace}"}
        )
        return {c.attrs["Labels"][LABEL] for c in found}
