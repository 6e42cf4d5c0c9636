"""Bad input through the public API gets a clear 4xx, never a silent 200 or a 5xx; limits are
enforced while a body streams in; per-tenant quotas answer 429 with the limit."""

import socket
from urllib.parse import urlparse

import httpx
import pytest

from tests.integration.test_sandbox_api import create, post
from tests.support import auth, running_api, wait_until

SMALL = {"workspace_mb": 16, "tmp_mb": 16, "home_mb": 16}  # the quota counts memory_mb + these 48 MiB


@pytest.fixture(scope="module")
def strict_api(settings, projector, sandbox_processor):
    """A second API over the same topics and processor, with small limits and quotas."""
    strict = settings.model_copy(
        update={
            "max_file_bytes": 1024 * 1024,
            "quota_sandboxes": 2,
            "quota_memory_mb": 700,
            "quota_concurrent_execs": 1,
        }
    )
    with running_api(strict) as url:
        yield url


@pytest.fixture(scope="module")
def sandbox(api_url, sandbox_processor, settings):
    from astraforge.keys import create_key

    key = create_key(settings, "bad-input")
    sid = create(api_url, key)["id"]
    yield key, sid
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


@pytest.mark.parametrize(
    "body",
    [
        {"command": ["echo", "a\x00b"]},
        {"command": "echo a\x00; rm -rf /workspace"},
        {"command": "env", "env": {"A=B": "x"}},
        {"command": "env", "env": {"A": "x\x00y"}},
        {"command": "env", "env": {"": "x"}},
        {"command": "pwd", "cwd": "/tmp\x00/etc"},
        {"command": []},
        {"command": ""},
    ],
)
def test_exec_input_that_execve_would_mangle_is_refused(api_url, sandbox, body) -> None:
    key, sid = sandbox
    r = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_a_file_path_whose_escapes_are_not_utf8_is_refused(api_url, sandbox) -> None:
    """Starlette turns %-escapes that are not UTF-8 into U+FFFD: the upload wrote a file of another
    name and answered 200 with it. A path that is not text is refused before anything is written."""
    key, sid = sandbox
    for method in ("PUT", "GET"):
        r = httpx.request(method, f"{api_url}/v1/sandboxes/{sid}/files/a%ED%A0%80b", headers=auth(key), content=b"x")
        assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"], (method, r.text)
    listed = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "ls /workspace"}).json()
    assert "\ufffd" not in listed["stdout"], listed
    done = httpx.put(f"{api_url}/v1/sandboxes/{sid}/files/%F0%9F%98%80%25.txt", headers=auth(key), content=b"x")
    assert done.status_code == 200 and done.json()["path"] == "/workspace/\U0001f600%.txt", done.text


def test_the_uid_cannot_be_overridden(api_url, sandbox) -> None:
    key, _ = sandbox
    for profile in ({"uid": 0}, {"uid": 1001}, {"nonsense": 1}):
        r = post(f"{api_url}/v1/sandboxes", key, {"profile": profile}, wait="false")
        assert r.status_code == 422 and "cannot be set" in r.json()["error"]["message"], r.text


def test_uploads_past_the_limit_are_refused_while_streaming(strict_api, sandbox) -> None:
    key, sid = sandbox
    url = f"{strict_api}/v1/sandboxes/{sid}/files/big.bin"
    ok = httpx.put(url, headers=auth(key), content=b"x" * (1024 * 1024), timeout=60)
    assert ok.status_code == 200 and ok.json()["size"] == 1024 * 1024
    over = httpx.put(url, headers=auth(key), content=b"x" * (1024 * 1024 + 1), timeout=60)
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"

    def chunks():
        for _ in range(40):
            yield b"y" * 65536

    chunked = httpx.put(url, headers=auth(key), content=chunks(), timeout=60)  # no Content-Length
    assert chunked.status_code == 413

    # A body that declares 257 MiB is refused from its headers: the answer comes before a byte is sent.
    address = urlparse(strict_api)
    with socket.create_connection((address.hostname, address.port), timeout=20) as s:
        s.sendall(
            f"PUT /v1/sandboxes/{sid}/files/huge.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {257 * 1024 * 1024}\r\n\r\n".encode()
        )
        assert s.recv(65536).startswith(b"HTTP/1.1 413")


def test_a_missing_control_socket_answers_503_quickly(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    runtime_id = sandbox_processor.state(sid).runtime_id  # a warm-pool sandbox keeps its pool name
    (sandbox_processor.provider.control_root / runtime_id / "supervisor.sock").unlink()
    r = httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/anything.txt", headers=auth(key), timeout=30)
    assert r.status_code == 503 and r.json()["error"]["message"].startswith("unavailable"), r.text
    assert "/" not in r.json()["error"]["message"].partition(":")[2], "no host path in the message"
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_quotas_answer_429_with_the_limit(strict_api, sandbox_processor, settings) -> None:
    from astraforge.keys import create_key

    key = create_key(settings, "quota-tenant")
    first = create(strict_api, key, profile=SMALL | {"memory_mb": 300})["id"]

    def over_memory() -> httpx.Response:
        return post(f"{strict_api}/v1/sandboxes", key, {"profile": SMALL | {"memory_mb": 512}}, wait="false")

    wait_until(lambda: over_memory().status_code == 429, timeout=30, what="the first sandbox is projected")
    error = over_memory().json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"] == {"quota": "memory_mb", "limit": 700, "used": 348}
    second = create(strict_api, key, profile=SMALL | {"memory_mb": 300})["id"]

    def over_count() -> httpx.Response:
        return post(f"{strict_api}/v1/sandboxes", key, {"profile": SMALL | {"memory_mb": 64}}, wait="false")

    wait_until(lambda: over_count().status_code == 429, timeout=30, what="the second sandbox is projected")
    assert over_count().json()["error"]["details"]["quota"] == "sandboxes"

    running = post(f"{strict_api}/v1/sandboxes/{first}/exec", key, {"command": "sleep 60", "async": True}).json()
    wait_until(
        lambda: post(f"{strict_api}/v1/sandboxes/{second}/exec", key, {"command": "true"}).status_code == 429,
        timeout=30,
        what="the running command counts against the exec quota",
    )
    refused = post(f"{strict_api}/v1/sandboxes/{second}/exec", key, {"command": "true"}).json()["error"]
    assert refused["details"] == {"quota": "concurrent_execs", "limit": 1, "used": 1}
    post(f"{strict_api}/v1/sandboxes/{first}/exec/{running['command_id']}/cancel", key)
    wait_until(
        lambda: post(f"{strict_api}/v1/sandboxes/{second}/exec", key, {"command": "true"}).status_code == 200,
        timeout=30,
        what="the quota frees up when the command ends",
    )

    for sid in (first, second):
        post(f"{strict_api}/v1/sandboxes/{sid}/stop", key)
    third: list[str] = []

    def created_after_stops() -> bool:
        r = post(f"{strict_api}/v1/sandboxes", key, {"profile": SMALL | {"memory_mb": 64}}, wait="false")
        third.extend([r.json()["id"]] if r.status_code == 201 else [])
        return r.status_code == 201

    wait_until(created_after_stops, timeout=30, what="stopped sandboxes no longer count")
    post(f"{strict_api}/v1/sandboxes/{third[0]}/stop", key)
