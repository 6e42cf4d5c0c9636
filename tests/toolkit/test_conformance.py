"""deepagents' sandbox standard suite (langchain-tests ``SandboxIntegrationTests``) against
``SandboxBackend`` over the running platform: API, processor, docker sandbox, every call recorded.

One sandbox serves the whole suite (its tests each work under a directory of their own). The
tests that contradict the pinned deepagents' own ``BaseSandbox`` are marked ``xfail(strict=True)``
with the reason, so they still run and a deepagents release that changes the behaviour shows up.
"""

from collections.abc import Iterator

import pytest
from astraforge_toolkit import AstraForgeClient
from astraforge_toolkit.backend import SandboxBackend
from langchain_tests.integration_tests import SandboxIntegrationTests

from tests.conftest import new_tenant

# the suite's own ``sandbox_backend`` is a class-scoped fixture on the instance (langchain-tests 1.1.9)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Class-scoped fixtures defined as instance methods:pytest.PytestRemovedIn10Warning"
)


class TestAstraForgeSandbox(SandboxIntegrationTests):
    @pytest.fixture(scope="class")
    @classmethod
    def sandbox(cls, api_url, sandbox_processor, settings) -> Iterator[SandboxBackend]:
        _, key = new_tenant(settings)
        client = AstraForgeClient(api_url, key)
        sandbox = client.create_sandbox()
        assert sandbox.state == "ready", sandbox
        try:
            yield SandboxBackend(client, sandbox.id)
        finally:
            client.delete_sandbox(sandbox.id)
            client.close()
