"""Attacks that worked on the hardened platform (red team, after issue 6's fixes), each made end to
end through the public API with the sandbox processor running, as an agent inside a sandbox (through
the exec endpoint) or as a tenant would. Each test failed on the code before its fix.

The egress attacks use the probe and helpers of tests/security/test_egress_attacks.py.
"""

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from astraforge.keys import create_key
from tests.integration.test_sandbox_api import create, post
from tests.security.test_egress_attacks import AUTH, egress_events, probe, raw, stop, wait_events
from tests.support import auth, running_api


def _basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Proxy-Authorization: Basic {token}\r\n"


# -- egress attribution ------------------------------------------------------------------------
def test_an_exec_cannot_attribute_its_egress_to_another_command(api_url, sandbox_processor, tenant) -> None:
    """The proxy user named the command an attempt was recorded under, and any process could send
    any user: a finished command's id or an invented one. The supervisor's forwarder now says whose
    connection it is (tests/security/test_control_channel.py); what a request names is ignored."""
    _, key = tenant
    sid = create(api_url, key, egress_allow=["allowed.example"])["id"]
    first = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "printenv HTTP_PROXY"}).json()
    assert urlsplit(first["stdout"].strip()).username is None, "nothing to replay in the proxy URL"
    for header in (_basic(first["command_id"], "x"), _basic("cmd-invented", "x"), AUTH):
        request = raw(f"CONNECT denied.example:443 HTTP/1.1\r\nHost: denied.example:443\r\n{header}\r\n")
        assert probe(api_url, key, sid, "send", request)["responses"][0]["status"] == 403
    events = wait_events(api_url, key, sid, 3)
    items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()["items"]
    started = [e["payload"]["command_id"] for e in items if e["type"] == "exec.started"]
    assert [e["payload"]["command_id"] for e in events] == started[-3:], "each attempt is its own exec's"
    assert first["command_id"] not in started[-3:]
    stop(api_url, key, sid)


# -- egress proxy memory -----------------------------------------------------------------------
def test_an_upstream_flooding_interim_answers_cannot_fill_the_proxys_memory(
    api_url, sandbox_processor, tenant, egress_upstream
) -> None:
    """An upstream the tenant controls answers ``103 Early Hints`` without end while the agent's
    client reads nothing: the proxy relayed each interim head without waiting for the client, so
    every byte piled up in the shared processor's memory (256 MiB here; no limit at all)."""
    _, key = tenant
    up = egress_upstream
    target = f"{up.ip}:{up.port}"
    sid = create(api_url, key, egress_allow=[f"GET {target}"])["id"]
    request = raw(f"GET http://{target}/flood-interim HTTP/1.1\r\nHost: {target}\r\n{AUTH}\r\n")
    probe(api_url, key, sid, "stall", request, "20")
    flood = Path(f"{up.log}.flood")
    taken = int(flood.read_text()) if flood.exists() else 0
    assert taken < 64 * 1024 * 1024, f"the proxy took {taken} bytes from the upstream for a client that read none"
    assert egress_events(api_url, key, sid)[0]["type"] == "egress.allowed"
    stop(api_url, key, sid)


# -- quotas under a burst ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def strict_api(settings, projector, sandbox_processor):
    """A second API over the same topics and processor, with small quotas."""
    strict = settings.model_copy(update={"quota_sandboxes": 2, "quota_concurrent_execs": 1})
    with running_api(strict) as url:
        yield url


def _burst(calls: int, send) -> list[httpx.Response]:
    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(lambda _: send(), range(calls)))


def test_a_burst_of_creates_cannot_pass_the_sandbox_quota(strict_api, settings) -> None:
    """Usage was read from the projection, so creates admitted before the first was projected all
    saw the quota free: 8 at once made 8 sandboxes under a quota of 2."""
    key = create_key(settings, "burst-creates")
    answers = _burst(8, lambda: post(f"{strict_api}/v1/sandboxes", key, {"profile": {"memory_mb": 64}}, wait="false"))
    created = [r.json()["id"] for r in answers if r.status_code == 201]
    assert sorted({r.status_code for r in answers}) == [201, 429], [r.text for r in answers]
    assert len(created) == 2, f"{len(created)} sandboxes created under a quota of 2"
    for sid in created:
        post(f"{strict_api}/v1/sandboxes/{sid}/stop", key)


def test_a_burst_of_async_execs_cannot_pass_the_exec_quota(strict_api, settings) -> None:
    """Running commands were counted from their exec.started records, which only the processor
    writes: async execs sent together were all admitted under a quota of 1 and all ran."""
    key = create_key(settings, "burst-execs")
    sid = create(strict_api, key, profile={"memory_mb": 64})["id"]
    body = {"command": "sleep 30", "async": True}
    answers = _burst(6, lambda: post(f"{strict_api}/v1/sandboxes/{sid}/exec", key, body))
    accepted = [r.json()["command_id"] for r in answers if r.status_code == 200]
    assert len(accepted) == 1, f"{len(accepted)} commands admitted under a quota of 1: {[r.text for r in answers]}"
    for command_id in accepted:
        post(f"{strict_api}/v1/sandboxes/{sid}/exec/{command_id}/cancel", key)
    post(f"{strict_api}/v1/sandboxes/{sid}/stop", key)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"command": ["echo", *["a" * 128 * 1024] * 20]},
        {"command": "true", "env": {f"E{i}": "b" * 128 * 1024 for i in range(12)}},
    ],
    ids=["argv", "env"],
)
def test_an_exec_too_big_for_one_record_is_refused(api_url, sandbox_processor, tenant, body) -> None:
    """Each string was bounded but not their sum: 2.5 MiB of argv or 1.5 MiB of env passed the
    model, the broker refused the record, and the API answered 500."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    r = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, body)
    assert r.status_code == 422, r.text[:300]
    assert "the limit is" in r.text
    assert (
        post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": ["echo", "a" * 100 * 1024]}).json()["exit_code"]
        == 0
    )
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)
