"""A platform per provider for the attacks that run through the public API.

Docker reuses the session's stack (tests/conftest.py). Bubblewrap gets its own stack (topics,
projection schema, API, projector and a sandbox processor over the bwrap provider): one
processor consumes a deployment's commands, so the two providers cannot share one.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from astraforge.config import Settings
from astraforge.db import connect, ensure_control_schema
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from tests.conftest import make_settings, new_tenant
from tests.support import running_api, running_projector


@dataclass(frozen=True)
class Platform:
    provider: str
    api_url: str
    processor: SandboxProcessor
    settings: Settings

    def tenant_key(self) -> str:
        return new_tenant(self.settings)[1]


@pytest.fixture(scope="session")
def bwrap_platform(settings) -> Iterator[Platform]:
    """Its provider has a namespace of its own: the processor reaps the orphans of its namespace every
    30 s, and the sandboxes other tests create straight on the session's ``bwrap_provider`` are
    orphans to it (a CI run under load lost the escape suite's sandbox to it mid-module)."""
    from astraforge.sandbox.providers.bwrap import BwrapProvider

    s = make_settings(warm_pools=[])
    ensure_topics(s)
    ensure_control_schema(s)
    bwrap_provider = BwrapProvider(s.state_dir, settings.cache_dir / "rootfs-bookworm", namespace=s.topic_prefix)
    processor = SandboxProcessor(s, bwrap_provider)
    with running_projector(s), running_api(s, sse_ping_s=1.0) as url:
        thread = threading.Thread(target=processor.run, daemon=True)
        thread.start()
        try:
            yield Platform("bwrap", url, processor, s)
        finally:
            processor.stop()
            thread.join(timeout=10)
            for sandbox_id in bwrap_provider.list_ids():
                bwrap_provider.stop(sandbox_id)
    with connect(s, autocommit=True) as conn:
        drop_schema(conn, s.projection_schema)


@pytest.fixture(params=["docker", "bwrap"])
def platform(request) -> Platform:
    """The public API with a sandbox processor over the docker or the bwrap provider."""
    if request.param == "bwrap":
        return request.getfixturevalue("bwrap_platform")
    processor = request.getfixturevalue("sandbox_processor")
    return Platform("docker", request.getfixturevalue("api_url"), processor, request.getfixturevalue("settings"))
