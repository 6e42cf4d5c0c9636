"""Session fixtures over the real local stack (Kafka, PostgreSQL) started by `make test`.

Each test session gets its own topic prefix and projection schema, so runs never see each
other's records. A missing service is an error, never a skip.
"""

import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from astraforge.config import Settings
from astraforge.db import connect, ensure_control_schema
from astraforge.keys import create_key
from astraforge.producers.kafka import EventProducer
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from tests.netns import NetnsUpstream, netns_upstream, upstream_addresses
from tests.support import free_port, running_api, running_projector, wait_until

# a credential only the platform knows: the egress proxy adds it for the test upstream's address
# (tests/netns.py; tests/integration/test_egress.py proves it never enters the sandbox)
EGRESS_SECRET = f"real-key-{secrets.token_hex(12)}"
# the operator's platform upstream: its port is held from import on (no other process can take it
# before a test serves on it: tests/security/test_egress_attacks.py, tests/integration/test_codex.py)
GATEWAY_SOCKET = socket.create_server(("127.0.0.1", 0))
GATEWAY_PORT = GATEWAY_SOCKET.getsockname()[1]
# the model gateway's real key: the egress proxy puts it on requests to the gateway; a sandbox holds
# only a placeholder (tests/integration/test_codex.py looks for this value inside the sandbox)
GATEWAY_SECRET = f"gateway-key-{secrets.token_hex(16)}"


def gateway_listener() -> socket.socket:
    """The gateway's listening socket for one server: a duplicate, so a server that closes its own
    leaves the port held for the next test's server."""
    return socket.socket(fileno=os.dup(GATEWAY_SOCKET.fileno()))


@pytest.fixture(scope="session", autouse=True)
def _release_gateway_port() -> Iterator[None]:
    yield
    GATEWAY_SOCKET.close()


def make_settings(**overrides) -> Settings:
    tag = secrets.token_hex(4)
    fields = {
        "env": "test",
        "topic_prefix": f"test-{tag}",
        "projection_schema": f"test_{tag}",
        "topic_partitions": 3,
        "egress_credentials": {
            **{ip: f"Authorization: Bearer {EGRESS_SECRET}" for ip in upstream_addresses()},
            "model-gateway": f"Authorization: Bearer {GATEWAY_SECRET}",
        },
        "egress_platform_upstreams": {"model-gateway": f"127.0.0.1:{GATEWAY_PORT}"},
        "egress_header_timeout_s": 5,
        "egress_max_connections": 8,
        "warm_pools": [{"size": 2}, {"profile": {"memory_mb": 300}, "size": 1}],
        "max_output_bytes": 16 * 1024 * 1024,
        "max_snapshot_bytes": 4 * 1024 * 1024,
    }
    return Settings(**{**fields, **overrides})


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    s = make_settings()
    ensure_topics(s)
    ensure_control_schema(s)
    yield s
    with connect(s, autocommit=True) as conn:
        drop_schema(conn, s.projection_schema)


@pytest.fixture
def fresh_settings() -> Iterator[Settings]:
    """Settings over brand-new, empty topics and schema (for tests that need a quiet log)."""
    s = make_settings()
    ensure_topics(s)
    yield s
    with connect(s, autocommit=True) as conn:
        for schema in (s.projection_schema, f"{s.projection_schema}_rebuild"):
            drop_schema(conn, schema)


@pytest.fixture(scope="session")
def producer(settings: Settings) -> Iterator[EventProducer]:
    p = EventProducer(settings)
    yield p
    p.close()


@pytest.fixture(scope="session")
def projector(settings: Settings):
    with running_projector(settings) as p:
        yield p


@pytest.fixture(scope="session")
def api_url(settings: Settings, projector) -> Iterator[str]:
    with running_api(settings, sse_ping_s=1.0) as url:
        yield url


@pytest.fixture(scope="session")
def egress_upstream(tmp_path_factory) -> Iterator[NetnsUpstream]:
    """An HTTP upstream at a globally routable address in a network namespace this session made."""
    port = free_port()  # free on the host's loopback too (tests/security/test_egress_attacks.py binds it there)
    with netns_upstream(port, tmp_path_factory.mktemp("upstream") / "requests.jsonl") as upstream:
        yield upstream


def new_tenant(settings: Settings) -> tuple[str, str]:
    tenant = f"t-{secrets.token_hex(4)}"
    return tenant, create_key(settings, tenant)


@pytest.fixture
def tenant(settings: Settings) -> tuple[str, str]:
    """A new tenant and its API key."""
    return new_tenant(settings)


@pytest.fixture
def other_tenant(settings: Settings) -> tuple[str, str]:
    return new_tenant(settings)


@pytest.fixture(scope="session")
def docker_provider(settings: Settings):
    from astraforge.sandbox.providers import _local_docker
    from astraforge.sandbox.providers.docker import DockerProvider

    return DockerProvider(settings.state_dir, _local_docker(settings), namespace=settings.topic_prefix)


@pytest.fixture(scope="session")
def bwrap_provider(settings: Settings):
    from astraforge.sandbox.providers.bwrap import BwrapProvider

    return BwrapProvider(settings.state_dir, settings.cache_dir / "rootfs-bookworm", namespace=settings.topic_prefix)


@pytest.fixture(scope="session")
def sandbox_processor(settings: Settings, docker_provider):
    """The sandbox processor over the docker provider, in a thread for the whole session."""
    import threading

    from astraforge.processors.sandboxes import SandboxProcessor

    # no periodic reconcile: tests drive this session's provider directly (the contract and escape
    # suites), and their sandboxes, which no processor state owns, would be reaped as orphans mid-test
    # (the periodic pass has tests of its own, each with its own processor and namespace)
    processor = SandboxProcessor(settings, docker_provider, reconcile_interval_s=24 * 3600)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    yield processor
    processor.stop()
    thread.join(timeout=10)
    for sandbox_id in docker_provider.list_ids():  # this session's namespace only
        docker_provider.stop(sandbox_id)


@pytest.fixture
def running_processor(fresh_settings: Settings):
    """A sandbox processor over fresh topics and its own docker namespace, owning every partition."""
    import threading

    from astraforge.processors.sandboxes import SandboxProcessor
    from astraforge.sandbox.providers import make_provider

    s = fresh_settings.model_copy(update={"sandbox_provider": "docker", "warm_pools": []})
    provider = make_provider(s)  # this test's namespace: reconciling never touches another test's sandboxes
    processor = SandboxProcessor(s, provider)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    owns_all = {p: "owned" for p in range(s.topic_partitions)}
    wait_until(lambda: processor.ownership.status == owns_all, timeout=60, what="the processor owns every partition")
    yield processor
    processor.stop()
    thread.join(timeout=60)
    for sid in provider.list_ids():
        provider.stop(sid)


@pytest.fixture(scope="module")
def conversations(settings: Settings, sandbox_processor):
    """A conversation processor over the session's sandbox processor, in a thread for the module."""
    import threading

    from astraforge.processors.conversations.processor import ConversationProcessor

    processor = ConversationProcessor(settings)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    yield processor
    processor.stop()
    thread.join(timeout=30)
