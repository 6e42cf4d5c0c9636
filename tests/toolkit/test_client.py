"""``AstraForgeClient`` and ``AsyncAstraForgeClient`` against the running platform (API, sandbox
processor, docker): typed results, errors with the API's codes, streamed exec, SSE resume."""

import asyncio
import gzip
import io
import tarfile
from collections.abc import Iterator

import pytest
from astraforge_toolkit import (
    AstraForgeClient,
    AsyncAstraForgeClient,
    BadRequest,
    Conflict,
    ExecResult,
    NotFound,
    Sandbox,
    Unauthorized,
)
from astraforge_toolkit.backend import SandboxBackend

from tests.conftest import new_tenant
from tests.support import wait_until
from tests.toolkit.cutting_relay import CuttingRelay


@pytest.fixture(scope="module")
def key(settings) -> str:
    return new_tenant(settings)[1]


@pytest.fixture(scope="module")
def client(api_url, sandbox_processor, key) -> Iterator[AstraForgeClient]:
    with AstraForgeClient(api_url, key) as c:
        yield c


@pytest.fixture(scope="module")
def sandbox(client) -> Iterator[Sandbox]:
    sandbox = client.create_sandbox()
    yield sandbox
    client.delete_sandbox(sandbox.id)


def test_a_sandbox_session_from_create_to_delete(client) -> None:
    created = client.create_sandbox(profile={"memory_mb": 256}, idle_timeout_s=300)
    assert isinstance(created, Sandbox) and created.state == "ready" and created.provider == "docker"
    assert client.get_sandbox(created.id).id == created.id
    assert created.id in [s.id for s in client.list_sandboxes(limit=500).items]
    client.heartbeat(created.id)
    client.stop_sandbox(created.id)
    wait_until(lambda: client.get_sandbox(created.id).state == "terminated", timeout=30)
    with pytest.raises(Conflict) as refused:
        client.exec(created.id, "true")
    assert refused.value.status == 409 and refused.value.code == "conflict"
    with pytest.raises(Conflict):
        client.delete_sandbox(created.id)  # it has ended


def test_exec_answers_a_typed_result_and_streams_its_output(client, sandbox) -> None:
    result = client.exec(sandbox.id, ["python", "-c", "import sys; print('out'); sys.exit(3)"])
    assert isinstance(result, ExecResult)
    assert (result.exit_code, result.stdout, result.truncated) == (3, "out\n", False)
    events = list(client.exec_stream(sandbox.id, "for i in 1 2 3; do echo line$i; done; echo err >&2"))
    command_ids = {e.payload["command_id"] for e in events}
    assert len(command_ids) == 1
    assert events[-1].type == "exec.finished" and events[-1].payload["exit_code"] == 0
    offsets = [e.offset for e in events]
    assert offsets == sorted(set(offsets))
    # a second streamed command starts after the first one's records: it sees none of them
    second = list(client.exec_stream(sandbox.id, "echo again"))
    assert {e.payload["command_id"] for e in second}.isdisjoint(command_ids)
    assert second[-1].type == "exec.finished"


def test_an_async_exec_is_cancelled_and_its_end_follows_on_the_stream(client, sandbox) -> None:
    accepted = client.exec_async(sandbox.id, "echo started; sleep 120")
    for event in client.stream(sandbox.id):
        if event.payload.get("command_id") != accepted.command_id:
            continue
        if event.type == "exec.output":
            client.cancel_exec(sandbox.id, accepted.command_id)  # it is running: its output came
        if event.type == "exec.finished":
            assert event.payload["cancelled"] is True
            break


def test_the_backend_answers_output_past_the_inline_limit_whole(client, sandbox) -> None:
    """Past 1 MiB a command's output goes on to the artifact store: the backend joins the two."""
    size = 3 * 1024 * 1024 // 2
    script = f"import sys; sys.stdout.write(''.join(chr(65 + i % 26) for i in range({size})))"
    response = SandboxBackend(client, sandbox.id).execute(f'python -c "{script}"')
    assert response.exit_code == 0 and response.truncated is False
    assert response.output == "".join(chr(65 + i % 26) for i in range(size))


def test_files_upload_download_export(client, sandbox) -> None:
    data = bytes(range(256)) * 8
    written = client.upload(sandbox.id, "/workspace/sub/data.bin", data)
    assert (written.path, written.size) == ("/workspace/sub/data.bin", len(data))
    assert client.download(sandbox.id, "sub/data.bin") == data  # relative: under /workspace
    assert client.download(sandbox.id, "/workspace/sub/data.bin") == data
    exported = client.export(sandbox.id, "/workspace/sub/data.bin")
    assert exported.size == len(data)
    assert client.artifact(exported.artifact_id) == data
    client.delete_artifact(exported.artifact_id)
    for event in client.stream(sandbox.id):
        if event.type == "artifact.deleted" and event.payload["artifact_id"] == exported.artifact_id:
            break
    with pytest.raises(NotFound) as missing:
        client.download(sandbox.id, "/workspace/nope.txt")
    assert missing.value.code == "not_found" and isinstance(missing.value, LookupError)


def test_snapshot_and_fork(client, sandbox) -> None:
    client.upload(sandbox.id, "/workspace/kept.txt", b"kept\n")
    snapshot = client.snapshot(sandbox.id)
    assert snapshot.sandbox_id == sandbox.id and snapshot.size > 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(client.artifact(snapshot.id)))) as tar:
        assert any(name.endswith("kept.txt") for name in tar.getnames())
    (fork,) = client.fork(snapshot.id, 1)
    try:
        assert fork.state == "ready" and fork.id != sandbox.id
        assert client.download(fork.id, "/workspace/kept.txt") == b"kept\n"
    finally:
        client.delete_sandbox(fork.id)


def test_errors_carry_the_api_code(api_url, client, sandbox) -> None:
    with pytest.raises(BadRequest) as bad:
        client.exec(sandbox.id, "true", timeout=-1)
    assert bad.value.status == 422 and bad.value.code == "invalid_request" and bad.value.details
    with pytest.raises(NotFound):
        client.get_sandbox("sb-does-not-exist")
    with AstraForgeClient(api_url, "af_0000000000000000_wrong") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.list_sandboxes()
    assert denied.value.code == "unauthorized"


def test_a_dropped_stream_resumes_after_the_last_event_it_delivered(api_url, client, sandbox, key) -> None:
    for i in range(5):
        client.exec(sandbox.id, f"echo {i}")
    every = []
    page = client.events(sandbox.id, limit=1000)
    every += page.items
    assert page.next_after is None
    relay = CuttingRelay(api_url, after_bytes=3000)  # mid-replay, well before the end of it
    try:
        with AstraForgeClient(relay.url, key) as flaky:
            got = []
            for event in flaky.stream(sandbox.id):
                got.append(event)
                if event.offset == every[-1].offset:
                    break
    finally:
        relay.close()
    assert [e.offset for e in got] == [e.offset for e in every]  # each once, in order, no gap
    assert [e.type for e in got] == [e.type for e in every]
    assert len(relay.heads) == 2
    resumed_from = [line for line in relay.heads[1].split(b"\r\n") if line.lower().startswith(b"last-event-id")]
    assert resumed_from and int(resumed_from[0].split(b":")[1]) in [e.offset for e in got[:-1]]


def test_the_async_client(api_url, sandbox_processor, key) -> None:
    async def session() -> tuple[ExecResult, list[str], str]:
        async with AsyncAstraForgeClient(api_url, key) as client:
            created = await client.create_sandbox()
            try:
                result = await client.exec(created.id, "echo hi")
                types = [e.type async for e in client.exec_stream(created.id, "echo streamed")]
                await client.upload(created.id, "/tmp/a.txt", b"async")
                return result, types, (await client.download(created.id, "/tmp/a.txt")).decode()
            finally:
                await client.delete_sandbox(created.id)

    result, types, content = asyncio.run(session())
    assert result.stdout == "hi\n" and result.exit_code == 0
    assert types[-1] == "exec.finished" and "exec.output" in types
    assert content == "async"
