"""Docker provider: one hardened container per sandbox, via the docker SDK.

Containers are named ``af-<sandbox id>`` and labelled ``astraforge.sandbox_id``, so a create retried
after a crash finds the first one instead of starting a second, and reconciliation can list them.
The ``astraforge.namespace`` label (the deployment's topic prefix) keeps deployments sharing one
engine from reaping each other's sandboxes.
Network mode ``none``: the container has only a loopback interface.
"""

import docker
from docker.errors import APIError, DockerException, NotFound

from astraforge.errors import AstraForgeError
from astraforge.sandbox.profile import CONTROL_MOUNT, HOME, SUPERVISOR_DIR, SUPERVISOR_PATH, SUPERVISOR_SOCKET
from astraforge.sandbox.providers.base import SandboxHandle, SandboxProvider, SandboxSpec

LABEL = "astraforge.sandbox_id"
NAMESPACE_LABEL = "astraforge.namespace"


class DockerUnavailable(AstraForgeError, ConnectionError):
    """No Docker engine answers."""


class DockerProvider(SandboxProvider):
    name = "docker"

    def __init__(self, state_dir, docker_host: str | None = None, namespace: str = "astraforge") -> None:
        super().__init__(state_dir)
        self.namespace = namespace
        try:
            self.client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
            self.client.ping()
        except DockerException as e:
            raise DockerUnavailable(f"no Docker engine at {docker_host or 'DOCKER_HOST'}: {e}") from e

    @staticmethod
    def container_name(sandbox_id: str) -> str:
        return f"af-{sandbox_id}"

    def create(self, spec: SandboxSpec) -> SandboxHandle:
        p = spec.profile
        control = self.control_dir(spec.sandbox_id, p.uid)
        handle = SandboxHandle(spec.sandbox_id, self.name, control)
        try:
            container = self.client.containers.get(self.container_name(spec.sandbox_id))
            if container.status != "running":
                container.start()
        except NotFound:
            tmpfs = {
                path: f"size={mb}m,uid={p.uid},gid={p.uid},mode=0755,nosuid,nodev" for path, mb in p.tmpfs().items()
            }
            try:
                self.client.containers.run(
                    spec.image,
                    command=["python3", SUPERVISOR_PATH, SUPERVISOR_SOCKET],
                    name=self.container_name(spec.sandbox_id),
                    labels={LABEL: spec.sandbox_id, NAMESPACE_LABEL: self.namespace},
                    detach=True,
                    init=True,
                    user=f"{p.uid}:{p.uid}",
                    read_only=True,
                    tmpfs=tmpfs,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    network_mode="none",
                    pids_limit=p.pids,
                    mem_limit=f"{p.memory_mb}m",
                    memswap_limit=f"{p.memory_mb}m",
                    nano_cpus=int(p.cpus * 1e9),
                    environment={"HOME": HOME, **spec.env},
                    working_dir="/workspace",
                    volumes={
                        str(control): {"bind": CONTROL_MOUNT, "mode": "rw"},
                        str(self.supervisor_dir): {"bind": SUPERVISOR_DIR, "mode": "ro"},
                    },
                )
            except APIError as e:
                if e.status_code != 409:  # 409: a concurrent create won the name; use that one
                    self.release_control_dir(spec.sandbox_id)
                    raise AstraForgeError(f"docker could not start sandbox {spec.sandbox_id}: {e.explanation}") from e
        handle.client.wait_ready(timeout=20)
        return handle

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
