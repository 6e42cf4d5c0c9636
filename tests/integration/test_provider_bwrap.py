import pytest

from tests.contracts.sandbox_provider import SandboxProviderContract


class TestBwrapProvider(SandboxProviderContract):
    @pytest.fixture
    def provider(self, bwrap_provider):
        return bwrap_provider
