"""Sandbox providers: docker (docker SDK) and bwrap (bubblewrap, daemonless)."""

from astraforge.config import Settings
from astraforge.sandbox.providers.base import SandboxProvider


def make_provider(settings: Settings) -> SandboxProvider:
    """The configured provider; ``auto`` takes docker when an engine answers, else bubblewrap."""
    from astraforge.sandbox.providers.bwrap import BwrapProvider
    from astraforge.sandbox.providers.docker import DockerProvider, DockerUnavailable

    if settings.sandbox_provider in ("auto", "docker"):
        host = settings.docker_host or _local_docker(settings)
        try:
            return DockerProvider(settings.state_dir, host, namespace=settings.topic_prefix)
        except DockerUnavailable:
            if settings.sandbox_provider == "docker":
                raise
    return BwrapProvider(settings.state_dir, settings.cache_dir / "rootfs-bookworm", namespace=settings.topic_prefix)


def _local_docker(settings: Settings) -> str | None:
    sock = settings.state_dir / "dockerd" / "docker.sock"
    return f"unix://{sock}" if sock.exists() else None
