import io
import secrets
import tarfile

import pytest

from astraforge.sandbox.providers.base import SandboxSpec
from tests.contracts.sandbox_provider import CommandHandoffContract, SandboxProviderContract


class TestDockerProvider(SandboxProviderContract, CommandHandoffContract):
    @pytest.fixture
    def provider(self, docker_provider):
        return docker_provider


SAFE_PATH_IMAGE = "astraforge/sandbox-safepath:test"


def test_a_sandbox_starts_from_an_image_whose_environment_sets_pythonsafepath(docker_provider, settings) -> None:
    """A docker image's ``ENV`` reaches the supervisor (pid 1): with ``PYTHONSAFEPATH=1`` (a common
    hardening) python leaves the script's directory off ``sys.path``, and the launcher's import of
    the supervisor module beside it failed: no sandbox of that image started."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {settings.sandbox_image}\nENV PYTHONSAFEPATH=1\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    docker_provider.client.images.build(fileobj=context, custom_context=True, tag=SAFE_PATH_IMAGE, rm=True)
    sandbox_id = f"safepath-{secrets.token_hex(6)}"
    try:
        handle = docker_provider.create(SandboxSpec(sandbox_id, image=SAFE_PATH_IMAGE))
        result = handle.client.exec(argv=["echo", "ok"])
        assert result.exit_code == 0 and result.stdout == b"ok\n", result
    finally:
        docker_provider.stop(sandbox_id)
