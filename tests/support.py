"""Helpers shared by the suites: waiting, free ports, an in-thread uvicorn, a background projector."""

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from astraforge.api.main import create_app
from astraforge.api.server import server_config
from astraforge.config import Settings
from astraforge.projections.postgres import Projector
from astraforge.schemas import Envelope


def wait_until(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_api(settings: Settings, sse_ping_s: float = 15.0, graceful_s: float | None = None) -> Iterator[str]:
    """The real app on a free loopback port, in a thread; yields its base URL. On exit it waits
    for requests in flight, for at most ``graceful_s`` (then they are cancelled) if given."""
    with running_app(settings, sse_ping_s, graceful_s) as (url, _):
        yield url


@contextmanager
def running_app(
    settings: Settings, sse_ping_s: float = 15.0, graceful_s: float | None = None
) -> Iterator[tuple[str, FastAPI]]:
    """``running_api``, also yielding the app (a test that must know what the API holds, e.g. its upload
    slots, asks it rather than racing it)."""
    port = free_port()
    app = create_app(settings, sse_ping_s=sse_ping_s)
    config = server_config(
        app, "127.0.0.1", port, settings.api_header_timeout_s, log_level="warning", timeout_graceful_shutdown=graceful_s
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, timeout=30, what="uvicorn start")
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_projector(settings: Settings, schema: str | None = None) -> Iterator[Projector]:
    projector = Projector(settings, schema=schema)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    try:
        yield projector
    finally:
        projector.stop()
        thread.join(timeout=10)


def chat(stream_id: str, tenant: str, text: str, **kw) -> Envelope:
    """A small valid event for tests that only need *some* record in a stream."""
    return Envelope(
        type="chat.message",
        stream_id=stream_id,
        tenant_id=tenant,
        actor="test",
        payload={"message_id": text, "role": "user", "text": text},
        **kw,
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get(url: str, key: str | None = None, **params) -> httpx.Response:
    return httpx.get(url, headers=auth(key) if key else {}, params=params, timeout=30)


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that points an `astraforge` subprocess at the same topics and schema."""
    return {**os.environ, **settings.as_env()}


def get_artifact(api_url: str, key: str, artifact_id: str) -> httpx.Response:
    """An artifact named in a result: readable once its record is projected (milliseconds later)."""
    url = f"{api_url}/v1/artifacts/{artifact_id}"
    wait_until(lambda: httpx.get(url, headers=auth(key), timeout=60).status_code != 404, timeout=30, what=url)
    return httpx.get(url, headers=auth(key), timeout=60)


def sandbox_ids_in(settings: Settings, partitions: set[int], n: int = 1) -> list[str]:
    """``n`` new sandbox ids whose streams land on ``partitions`` (the producer's partitioner)."""
    from astraforge.kafka import partition_for

    found: list[str] = []
    while len(found) < n:
        sid = f"sb-{os.urandom(16).hex()}"
        if partition_for(sid, settings.topic_partitions) in partitions:
            found.append(sid)
    return found
