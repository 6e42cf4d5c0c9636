"""Keys and tenant scope, attacked as a caller holding part of a key, a revoked key, or its own key
to another tenant's stream id, through the real app on a free port.

Revocation is not instant: an API process reuses a key check for ``key_cache_ttl_s`` (5 s by
default), so a revoked key may still work there for that long; the tests prove it stops then.
"""

import secrets
import subprocess
import sys
import time
import uuid

import httpx
from httpx_sse import connect_sse

from astraforge.keys import create_key, revoke_key
from astraforge.schemas import Envelope
from tests.support import auth, chat, cli_env, get, running_api, wait_until


def _key_id(key: str) -> str:
    return key.split("_")[1]


def test_a_real_key_id_with_a_wrong_secret_is_refused(api_url, tenant) -> None:
    _, key = tenant
    forged = f"af_{_key_id(key)}_{secrets.token_urlsafe(32)}"  # well-formed, the id exists, the secret is a guess
    assert forged != key and len(forged) == len(key)
    r = get(f"{api_url}/v1/streams", forged)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert get(f"{api_url}/v1/streams", key).status_code == 200, "the real key itself works"


def test_a_revoked_key_is_refused(settings, api_url, tenant) -> None:
    name, kept = tenant
    revoked = create_key(settings, name, "to revoke")
    assert get(f"{api_url}/v1/streams", kept).status_code == 200

    cli = [sys.executable, "-m", "astraforge.cli", "keys", "revoke", _key_id(revoked)]
    done = subprocess.run(cli, env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    r = get(f"{api_url}/v1/streams", revoked)  # never verified by this process: no cached answer
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"
    assert get(f"{api_url}/v1/streams", kept).status_code == 200, "only that key is revoked, not the tenant"
    again = subprocess.run(cli, env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_a_running_api_checks_a_key_again_once_its_cache_ttl_has_passed(settings, projector, tenant) -> None:
    """The revocation lag is the key cache's ttl, not forever: a process that verified the key
    earlier checks it against its row again once the ttl has passed. (The ttl is 1.5 s, above 1, so
    a cache expiry computed with the wrong arithmetic cannot pass for "already expired".)"""
    name, _ = tenant
    key = create_key(settings, name, "verified, then revoked later")
    ttl = 1.5
    with running_api(settings.model_copy(update={"key_cache_ttl_s": ttl})) as url:
        assert get(f"{url}/v1/streams", key).status_code == 200  # verified and cached by this process
        time.sleep(ttl + 0.1)  # not a timing assertion: waits out the cache (monotonic clock)
        assert revoke_key(settings, _key_id(key))
        assert get(f"{url}/v1/streams", key).status_code == 401


def test_a_request_without_a_key_is_told_how_to_send_one(api_url) -> None:
    r = httpx.get(f"{api_url}/v1/streams")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]


def _texts_sse(api_url: str, key: str, stream: str, until: str) -> list[str]:
    texts: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        connect_sse(client, "GET", f"{api_url}/v1/streams/{stream}/events/sse", headers=auth(key)) as source,
    ):
        assert source.response.status_code == 200
        for event in source.iter_sse():
            if event.data:
                texts.append(event.json()["payload"]["text"])
                if texts[-1] == until:
                    return texts
    raise AssertionError(f"the SSE stream ended before {until!r}: {texts}")


def test_two_tenants_writing_one_stream_id_see_only_their_own_records(api_url, producer, tenant, other_tenant) -> None:
    """Stream ids are not secret and nothing stops two writers (webhooks, runs) from choosing the same
    one: the tenant check must hold on every record, not only on the stream's row."""
    a, a_key = tenant
    b, b_key = other_tenant
    stream = f"shared-{secrets.token_hex(4)}"
    # one key -> one partition, in this order; once a2 is projected, b1 is too
    producer.append_many([chat(stream, a, "a1"), chat(stream, b, "b1 (not yours)"), chat(stream, a, "a2")])

    def a_texts() -> list[str]:
        r = get(f"{api_url}/v1/streams/{stream}/events", a_key, limit=1000)
        return [e["payload"]["text"] for e in r.json()["items"]] if r.status_code == 200 else []

    wait_until(lambda: "a2" in a_texts(), timeout=30, what="a2 projected")
    assert a_texts() == ["a1", "a2"], "REST"
    assert _texts_sse(api_url, a_key, stream, until="a2") == ["a1", "a2"], "SSE replay"

    # the stream's row is the first writer's: the second tenant reads nothing of it, by either route
    assert get(f"{api_url}/v1/streams/{stream}/events", b_key).status_code == 404
    assert httpx.get(f"{api_url}/v1/streams/{stream}/events/sse", headers=auth(b_key)).status_code == 404
    assert stream not in [s["stream_id"] for s in get(f"{api_url}/v1/streams", b_key).json()["items"]]


def test_another_tenants_sandbox_and_artifact_are_invisible(api_url, producer, tenant, other_tenant) -> None:
    """Ids leak (logs, URLs, a shared screen): knowing one must not reach another tenant's rows."""
    a, a_key = tenant
    _, b_key = other_tenant
    sandbox_id, artifact_id = f"sb-{secrets.token_hex(16)}", str(uuid.uuid4())
    artifact = {
        "artifact_id": artifact_id,
        "key": f"{a}/{artifact_id}",
        "sha256": "0" * 64,
        "size": 1,
        "content_type": "text/plain",
        "name": None,
    }
    producer.append_many(
        [
            Envelope(
                type="sandbox.requested",
                stream_id=sandbox_id,
                tenant_id=a,
                actor="test",
                sandbox_id=sandbox_id,
                payload={"state": "requested", "reason": None, "provider": None, "image": None, "details": {}},
            ),
            Envelope(
                type="artifact.stored",
                stream_id=sandbox_id,
                tenant_id=a,
                actor="test",
                sandbox_id=sandbox_id,
                payload={"artifact": artifact, "command_id": None},
            ),
        ]
    )
    wait_until(lambda: get(f"{api_url}/v1/sandboxes/{sandbox_id}", a_key).status_code == 200, what="sandbox projected")

    assert sandbox_id in [s["id"] for s in get(f"{api_url}/v1/sandboxes", a_key).json()["items"]]
    assert sandbox_id not in [s["id"] for s in get(f"{api_url}/v1/sandboxes", b_key).json()["items"]]
    assert get(f"{api_url}/v1/sandboxes/{sandbox_id}", b_key).status_code == 404
    # the row is A's (its bytes were never stored: "gone from the store"); B is told it does not exist
    assert "gone from the store" in get(f"{api_url}/v1/artifacts/{artifact_id}", a_key).json()["error"]["message"]
    r = get(f"{api_url}/v1/artifacts/{artifact_id}", b_key)
    assert r.status_code == 404 and r.json()["error"]["message"] == f"artifact {artifact_id} not found"
