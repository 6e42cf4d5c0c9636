import pytest

from tests.contracts.sandbox_provider import CommandHandoffContract, SandboxProviderContract


class TestDockerProvider(SandboxProviderContract, CommandHandoffContract):
    @pytest.fixture
    def provider(self, docker_provider):
        return docker_provider
