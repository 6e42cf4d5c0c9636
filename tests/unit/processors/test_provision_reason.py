"""A failed provision's reason is read by the tenant: it says why a request was refused, never the
engine's own text (host paths, socket names)."""

from astraforge.errors import ValidationError
from astraforge.processors.sandboxes.effects import public_reason
from astraforge.sandbox.client import SupervisorTimeout
from astraforge.sandbox.providers.docker import DockerUnavailable

HOST_PATH = "/work/main/.local/dockerd/docker.sock"


def test_a_refused_request_says_why() -> None:
    assert public_reason(ValidationError("image evil:latest is not allowed")) == "image evil:latest is not allowed"


def test_engine_and_supervisor_text_stays_in_the_log() -> None:
    engine = public_reason(DockerUnavailable(f"no Docker engine at unix://{HOST_PATH}: refused"))
    supervisor = public_reason(SupervisorTimeout(f"no supervisor at {HOST_PATH}: timed out"))
    library = public_reason(OSError(f"[Errno 13] Permission denied: '{HOST_PATH}'"))
    for reason in (engine, supervisor, library):
        assert "/work" not in reason and "docker.sock" not in reason
    assert "DockerUnavailable" in engine and "OSError" in library
