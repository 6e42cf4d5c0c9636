"""Attacks of the second red-team round, each made end to end through the public API with the
sandbox processor running: as an agent inside a sandbox (through the exec and files endpoints), as
a second tenant, or as a client sending odd input. Each test failed on the code before its fix.
"""

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from astraforge.db import connect, ensure_control_schema
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.topics import ensure_topics
from astraforge.projections.postgres import drop_schema
from tests.conftest import make_settings, new_tenant
from tests.integration.test_sandbox_api import create, post
from tests.support import auth, running_api, running_app, running_projector, wait_until

SCRIPTS = Path(__file__).parent / "scripts"


def _events(api_url: str, key: str, stream_id: str) -> list[dict]:
    items, after = [], -1
    while True:
        page = httpx.get(
            f"{api_url}/v1/streams/{stream_id}/events", headers=auth(key), params={"limit": 1000, "after": after}
        ).json()
        items += page["items"]
        if page["next_after"] is None:
            return items
        after = page["next_after"]


# -- the engine pulls what a tenant names ------------------------------------------------------
class _Listener:
    """A loopback TCP server recording the first bytes of every connection it gets."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with client:
                client.settimeout(2)
                try:
                    self.received.append(client.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.server.close()


def test_a_tenant_cannot_make_the_engine_connect_to_a_host_of_its_choice(api_url, sandbox_processor, tenant) -> None:
    """``image`` was any reference: the docker engine, on the host's network, pulled it, so a
    tenant made it connect to any host and port (here the host's loopback; equally PostgreSQL,
    the metadata service or the internal network), told apart open from closed ports by the
    failure reason, and could run any image from any registry as the sandbox (its own python3 as
    the supervisor, image volumes on the host's disk). Only the operator's images are offered now."""
    _, key = tenant
    listener = _Listener()
    try:
        r = post(f"{api_url}/v1/sandboxes", key, {"image": f"127.0.0.1:{listener.port}/probe:latest"})
        time.sleep(1)  # let a connection the create caused be accepted before we look
        assert listener.received == [], f"the engine connected for the tenant: {listener.received[:1]}"
        assert r.status_code == 422, r.text
        assert "image" in r.json()["error"]["message"]
    finally:
        listener.close()
    default = post(f"{api_url}/v1/sandboxes", key, {"image": "astraforge/sandbox:bookworm"})
    assert default.status_code == 201 and default.json()["state"] == "ready", default.text
    post(f"{api_url}/v1/sandboxes/{default.json()['id']}/stop", key)


# -- output amplification ----------------------------------------------------------------------
def test_output_written_a_byte_at_a_time_is_not_a_record_per_byte(api_url, sandbox_processor, tenant) -> None:
    """Each read of the command's pipe became a frame and each frame an exec.output record: a
    command writing one byte at a time turned 20,000 bytes into ~12,000 Kafka records and as many
    PostgreSQL rows (its 1 MiB of recorded output into ~600,000), and the synchronous answer held
    every one of them in the API's memory. Output is now framed at most every few milliseconds."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"
    script = (SCRIPTS / "byte_at_a_time.py").read_bytes()
    assert httpx.put(f"{base}/files/byte_at_a_time.py", headers=auth(key), content=script).status_code == 200
    result = post(f"{base}/exec", key, {"command": ["python3", "byte_at_a_time.py", "20000"]}).json()
    assert result["exit_code"] == 0 and result["stdout"] == "x" * 20000, "every byte is still recorded"
    records = [e for e in _events(api_url, key, sid) if e["type"] == "exec.output"]
    assert len(records) <= 2000, f"20000 bytes of output became {len(records)} records"
    post(f"{base}/stop", key)


# -- the processor's workers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_pool() -> Iterator[tuple[str, object, object]]:
    """A platform of its own (topics, projection, API, docker provider) whose sandbox processor has
    4 workers: the attack takes every worker of any pool, a small one keeps the test light."""
    from astraforge.sandbox.providers import _local_docker
    from astraforge.sandbox.providers.docker import DockerProvider

    s = make_settings(warm_pools=[])
    ensure_topics(s)
    ensure_control_schema(s)
    provider = DockerProvider(s.state_dir, _local_docker(s), namespace=s.topic_prefix)
    processor = SandboxProcessor(s, provider, workers=4)
    with running_projector(s), running_api(s) as url:
        thread = threading.Thread(target=processor.run, daemon=True)
        thread.start()
        try:
            yield url, s, provider
        finally:
            processor.stop()
            thread.join(timeout=10)
            for sandbox_id in provider.list_ids():
                provider.stop(sandbox_id)
    with connect(s, autocommit=True) as conn:
        drop_schema(conn, s.projection_schema)


def test_one_tenants_snapshots_cannot_starve_another_tenants_commands(small_pool) -> None:
    """Snapshots are counted by no quota and each holds a processor worker until its tar ends; the
    tar runs as the agent, which stops it (SIGSTOP). Six snapshots of one sandbox took every
    worker for 10 minutes, and another tenant's `echo hi` answered 504. Each tenant's file and
    snapshot work now waits in its own queue beyond a small share of the workers."""
    url, settings, provider = small_pool
    _, attacker = new_tenant(settings)
    _, victim = new_tenant(settings)
    victim_sid = create(url, victim)["id"]
    sid = create(url, attacker)["id"]
    base = f"{url}/v1/sandboxes/{sid}"
    script = (SCRIPTS / "stop_snapshots.py").read_bytes()
    assert httpx.put(f"{base}/files/stop_snapshots.py", headers=auth(attacker), content=script).status_code == 200
    # a big sparse file keeps each tar busy long enough to be caught
    setup = "truncate -s 50G big && (setsid python3 stop_snapshots.py >/dev/null 2>&1 </dev/null &)"
    assert post(f"{base}/exec", attacker, {"command": setup}).json()["exit_code"] == 0
    pool = ThreadPoolExecutor(6)
    snapshots = [pool.submit(httpx.post, f"{base}/snapshots", headers=auth(attacker), timeout=400) for _ in range(6)]
    try:
        time.sleep(5)  # every snapshot is under way (or waiting for a worker)
        r = httpx.post(
            f"{url}/v1/sandboxes/{victim_sid}/exec",
            headers=auth(victim),
            json={"command": "echo hi", "timeout_sec": 5},
            timeout=120,
        )
        assert r.status_code == 200, f"the other tenant's command: {r.status_code} {r.text[:200]}"
        assert r.json()["stdout"] == "hi\n"
    finally:
        provider.stop(sid)  # the stopped tars die with the sandbox; the snapshots fail
        for answer in snapshots:
            answer.result()
        pool.shutdown()


# -- slow clients ------------------------------------------------------------------------------
@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half-a-head"])
def test_the_api_closes_a_connection_whose_request_never_arrives(api_url, sent) -> None:
    """uvicorn has no request-head timeout: a connection that sends nothing, or half a head, was
    held for ever (each one a file descriptor of the API process; enough of them and nobody else
    is served). It is now closed after the header timeout."""
    port = int(api_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        sock.settimeout(60)  # far past the header timeout: the answer is whether it closes at all
        try:
            while sock.recv(4096):  # an answer (408) is fine; the connection must end
                pass
        except TimeoutError:
            pytest.fail("the API still holds a connection that never sent a request head")


# -- the live tail's memory --------------------------------------------------------------------
def test_an_sse_client_that_reads_nothing_cannot_hold_the_apis_memory(api_url, sandbox_processor, tenant) -> None:
    """Each SSE client's live queue was bounded by 20,000 records, not by bytes: exec.output records
    carry up to 64 KiB each, so one client that never read held up to 1.25 GiB of the API's memory
    (100 commands of 1 MiB each: +160 MiB, still held after the commands ended), and a tenant can
    open one per stream. A client that falls more than a few MiB behind is now let go (it resumes
    with Last-Event-ID, as after any overflow)."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    port = int(api_url.rsplit(":", 1)[1])
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(
            f"GET /v1/streams/{sid}/events/sse HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        time.sleep(1)  # subscribed
        for _ in range(40):  # 40 MiB of exec.output records on the stream
            r = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "head -c 1048576 /dev/zero | tr '\\0' x"})
            assert r.status_code == 200 and len(r.json()["stdout"]) == 1048576
        slow.settimeout(5)
        received, ended, until = 0, False, time.monotonic() + 60  # pings every second keep it busy if held
        while not ended and time.monotonic() < until:  # what the API had sent or buffered for it, then its end
            try:
                data = slow.recv(1024 * 1024)
            except TimeoutError:
                continue
            received, ended = received + len(data), not data
        assert ended, f"the API still holds the stream of a client that read nothing ({received} bytes sent)"
    assert received < 40 * 1024 * 1024, "the client was let go before the whole backlog went through"
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


# -- snapshot restore --------------------------------------------------------------------------
def test_a_restore_refuses_a_snapshot_that_unpacks_past_the_workspace(api_url, sandbox_processor, tenant) -> None:
    """A snapshot is checked on the host by reading it whole, and gzip packs zeros ~1000:1: a
    sparse file (no space in the workspace) made a snapshot within the 4 MiB cap that unpacks to
    3 GiB, which the processor decompressed on every restore (512 GiB at the default 512 MiB cap,
    for each of a fork's 20 sandboxes), and the new sandbox then again, only to fill its tmpfs.
    A restore now stops at the first entry that passes the new workspace's size."""
    _, key = tenant
    source = create(api_url, key)["id"]
    assert (
        post(f"{api_url}/v1/sandboxes/{source}/exec", key, {"command": "truncate -s 3G zeros"}).json()["exit_code"] == 0
    )
    snapshot = post(f"{api_url}/v1/sandboxes/{source}/snapshots", key)
    assert snapshot.status_code == 201, snapshot.text
    restored = post(
        f"{api_url}/v1/sandboxes", key, {"restore_snapshot": snapshot.json()["id"], "profile": {"workspace_mb": 64}}
    ).json()
    url = f"{api_url}/v1/sandboxes/{restored['id']}"
    wait_until(lambda: httpx.get(url, headers=auth(key)).json()["state"] in ("ready", "failed"), timeout=600)
    restored = httpx.get(url, headers=auth(key)).json()
    assert restored["state"] == "failed"
    assert "No space left" not in restored["reason"], "refused in the sandbox, after the host unpacked it all"
    assert "workspace" in restored["reason"], restored["reason"]
    post(f"{api_url}/v1/sandboxes/{source}/stop", key)


# -- the API host's disk -----------------------------------------------------------------------
def test_a_tenant_cannot_spool_unbounded_uploads_at_once(
    settings, projector, sandbox_processor, tenant, other_tenant
) -> None:
    """Each upload spools its body (up to max_file_bytes) to the API host's disk before any quota
    can weigh it, and nothing bounded how many one tenant had in flight: slow bodies sent at once
    held as many spools. Past ``quota_concurrent_uploads`` a tenant's next one is a 429; another
    tenant's upload is unaffected."""
    tenant_id, key = tenant
    _, other = other_tenant
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"x" * 1024
        release.wait(60)
        yield b"y"

    with running_app(settings.model_copy(update={"quota_concurrent_uploads": 2})) as (url, app):
        sid, other_sid = create(url, key)["id"], create(url, other)["id"]

        def upload(name: str, who: str = key, sandbox: str = sid, body=b"z") -> int:
            r = httpx.put(f"{url}/v1/sandboxes/{sandbox}/files/{name}", headers=auth(who), content=body, timeout=90)
            return r.status_code

        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(upload, f"slow{n}", body=slow_body()) for n in range(2)]
            try:  # the API's own count: a probe sent before both held their slot would take one itself
                wait_until(lambda: app.state.uploads.used[tenant_id] == 2, timeout=30, what="both slow uploads in")
                assert upload("third") == 429, "a third upload at once is refused"
                assert upload("theirs", other, other_sid) == 200, "another tenant's upload is not held up"
            finally:
                release.set()
            assert [f.result() for f in slow] == [200, 200]
        assert upload("after") == 200, "the slots are given back"
        for who, sandbox in ((key, sid), (other, other_sid)):
            post(f"{url}/v1/sandboxes/{sandbox}/stop", who)
