import pytest

from tests.contracts.sandbox_provider import SandboxProviderContract


class TestDockerProvider(SandboxProviderContract):
    @pytest.fixture
    def provider(self, docker_provider):
        return docker_provider
