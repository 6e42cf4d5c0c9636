"""A second tenant holding the first one's ids gets 404 on every route that takes an id, and
changes nothing: the sandbox still runs, the command is not cancelled, the artifact is not
deleted, no fork appears. The route table below must name every route with an id in its path,
so a new route cannot ship without its cross-tenant check."""

import httpx
import pytest

from tests.integration.test_sandbox_api import create, post
from tests.support import auth, wait_until

ID_PARAMS = (
    "{sandbox_id}",
    "{stream_id}",
    "{artifact_id}",
    "{snapshot_id}",
    "{command_id}",
    "{run_id}",
    "{integration_id}",
    "{conversation_id}",
)
# (method, path template) -> request body, for every route that takes an id
ROUTES = {
    ("GET", "/v1/sandboxes/{sandbox_id}"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/heartbeat"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/stop"): None,
    ("DELETE", "/v1/sandboxes/{sandbox_id}"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): {"command": "touch /workspace/pwned"},
    ("POST", "/v1/sandboxes/{sandbox_id}/snapshots"): None,
    ("PUT", "/v1/sandboxes/{sandbox_id}/files/{path}"): b"pwned",
    ("GET", "/v1/sandboxes/{sandbox_id}/files/{path}"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/exec/{command_id}/cancel"): None,
    ("GET", "/v1/streams/{stream_id}/events"): None,
    ("GET", "/v1/streams/{stream_id}/events/sse"): None,
    ("GET", "/v1/streams/{stream_id}/verify"): None,
    ("GET", "/v1/artifacts/{artifact_id}"): None,
    ("DELETE", "/v1/artifacts/{artifact_id}"): None,
    ("POST", "/v1/snapshots/{snapshot_id}/fork"): {"count": 1},
    ("GET", "/v1/sandboxes/{sandbox_id}/leases"): None,
    ("POST", "/v1/sandboxes/{sandbox_id}/leases"): {"path": "/workspace/secret.txt", "ttl_s": 3600},
    ("DELETE", "/v1/sandboxes/{sandbox_id}/leases"): None,
}

# run routes: tests/integration/test_runs.py::test_another_tenant_gets_404_on_every_run_route (a run needs
# a repository allowlist and the run orchestrator, which that module sets up)
RUN_ROUTES = {
    ("GET", "/v1/runs/{run_id}"): None,
    ("POST", "/v1/runs/{run_id}/review"): {"decision": "reject"},
    ("POST", "/v1/runs/{run_id}/cancel"): None,
}

# integration routes: tests/integration/test_webhooks.py::test_integrations_are_tenant_scoped_and_never_show_a_secret
INTEGRATION_ROUTES = {
    ("GET", "/v1/integrations/{integration_id}"): None,
    ("DELETE", "/v1/integrations/{integration_id}"): None,
}
# conversation routes: tests/integration/test_conversations.py (a conversation needs its processor and a
# model server, which that module sets up)
CONVERSATION_ROUTES = {
    ("GET", "/v1/conversations/{conversation_id}"): None,
    ("POST", "/v1/conversations/{conversation_id}/messages"): {"text": "hi"},
    ("POST", "/v1/conversations/{conversation_id}/cancel"): None,
}
# no API key there: a delivery is authenticated by the integration's signature, not by a tenant
# (tests/integration/test_webhooks.py::test_forged_unknown_malformed_and_installation_deliveries)
WEBHOOK_ROUTES = {("POST", "/v1/webhooks/sentry/{integration_id}"): None}


@pytest.fixture(scope="module")
def victim(api_url, sandbox_processor, settings):
    from astraforge.keys import create_key

    key = create_key(settings, "victim")
    sid = create(api_url, key)["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"
    httpx.put(f"{base}/files/secret.txt", headers=auth(key), content=b"victim's data")
    snapshot = post(f"{base}/snapshots", key).json()["id"]
    artifact = httpx.get(f"{base}/files/secret.txt", headers=auth(key), params={"export": True}).json()
    running = post(f"{base}/exec", key, {"command": "sleep 120", "async": True}).json()["command_id"]
    yield {
        "key": key,
        "sandbox_id": sid,
        "stream_id": sid,
        "snapshot_id": snapshot,
        "artifact_id": artifact["artifact_id"],
        "command_id": running,
        "path": "secret.txt",
    }
    post(f"{base}/stop", key)


def test_every_route_with_an_id_is_in_the_table(api_url) -> None:
    paths = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    with_ids = {(m.upper(), p) for p, ops in paths.items() for m in ops if any(i in p for i in ID_PARAMS)}
    tables = (ROUTES, RUN_ROUTES, INTEGRATION_ROUTES, CONVERSATION_ROUTES, WEBHOOK_ROUTES)
    assert with_ids == set().union(*tables)


def test_another_tenant_gets_404_everywhere_and_changes_nothing(api_url, victim, other_tenant) -> None:
    _, intruder = other_tenant
    for (method, template), body in ROUTES.items():
        url = api_url + template.format(**victim)
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body else {}
        with httpx.Client(timeout=30) as client, client.stream(method, url, headers=auth(intruder), **kwargs) as r:
            r.read()
            assert r.status_code == 404, (method, template, r.status_code, r.text)
            assert "victim's data" not in r.text

    for listing in ("/v1/sandboxes", "/v1/streams"):
        assert victim["sandbox_id"] not in httpx.get(api_url + listing, headers=auth(intruder)).text

    # nothing the intruder sent had an effect
    key, sid = victim["key"], victim["sandbox_id"]
    assert httpx.get(f"{api_url}/v1/sandboxes/{sid}", headers=auth(key)).json()["state"] in ("ready", "busy")
    ls = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "ls /workspace; cat secret.txt"}).json()
    assert ls["stdout"] == "secret.txt\nvictim's data", ls
    assert httpx.get(f"{api_url}/v1/artifacts/{victim['artifact_id']}", headers=auth(key)).content == b"victim's data"
    events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 500}).json()["items"]
    finished = [
        e for e in events if e["type"] == "exec.finished" and e["payload"]["command_id"] == victim["command_id"]
    ]
    assert finished == [], "the victim's command was not cancelled"
    assert all(
        e["actor"] in (f"tenant:{e['payload'].get('tenant', 'victim')}", "tenant:victim")
        or e["actor"].startswith("processor:")
        for e in events
    ), "every record is the victim's or the platform's"
    wait_until(
        lambda: len(httpx.get(f"{api_url}/v1/sandboxes", headers=auth(key)).json()["items"]) == 1,
        timeout=5,
        what="no forked sandbox appeared",
    )
