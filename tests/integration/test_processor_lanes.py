"""Long commands never hold up control: with more commands running than the processor once had
threads (64), a cancel, a stop and a new sandbox are served at once, through the public API."""

import httpx

from tests.conftest import new_tenant
from tests.support import auth, wait_until

PER_TENANT = 24  # three tenants (each within its quota of concurrent commands): 72 commands running


def post(url: str, key: str, json=None, **params) -> httpx.Response:
    r = httpx.post(url, headers=auth(key), json=json, params=params, timeout=120)
    assert r.status_code in (200, 201, 202, 204), r.text
    return r


def events(api_url: str, key: str, sandbox_id: str) -> list[dict]:
    return httpx.get(
        f"{api_url}/v1/streams/{sandbox_id}/events", headers=auth(key), params={"limit": 1000}, timeout=30
    ).json()["items"]


def test_cancel_stop_and_create_are_not_queued_behind_long_commands(api_url, sandbox_processor, settings) -> None:
    tenants = [new_tenant(settings)[1] for _ in range(3)]
    boxes = [(key, post(f"{api_url}/v1/sandboxes", key, {}).json()["id"]) for key in tenants]
    try:
        running: dict[str, list[str]] = {}
        for key, sid in boxes:
            running[sid] = [
                post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "sleep 600", "async": True}).json()[
                    "command_id"
                ]
                for _ in range(PER_TENANT)
            ]
        for key, sid in boxes:

            def all_started(key=key, sid=sid) -> bool:
                return sum(e["type"] == "exec.started" for e in events(api_url, key, sid)) == PER_TENANT

            wait_until(all_started, timeout=120, interval=0.5, what=f"{PER_TENANT} commands running in {sid}")

        (key1, sid1), (key2, sid2), (key3, _) = boxes
        cancelled = running[sid1][0]
        post(f"{api_url}/v1/sandboxes/{sid1}/exec/{cancelled}/cancel", key1)
        post(f"{api_url}/v1/sandboxes/{sid2}/stop", key2)
        fresh = post(f"{api_url}/v1/sandboxes", key3, {}).json()
        assert fresh["state"] == "ready", fresh
        wait_until(
            lambda: any(
                e["type"] == "exec.finished" and e["payload"]["command_id"] == cancelled and e["payload"]["cancelled"]
                for e in events(api_url, key1, sid1)
            ),
            timeout=30,
            interval=0.2,
            what="the cancel served",
        )
        wait_until(
            lambda: any(e["type"] == "sandbox.terminated" for e in events(api_url, key2, sid2)),
            timeout=30,
            interval=0.2,
            what="the stop served",
        )
        post(f"{api_url}/v1/sandboxes/{fresh['id']}/stop", key3)
    finally:
        for key, sid in boxes:
            httpx.post(f"{api_url}/v1/sandboxes/{sid}/stop", headers=auth(key), timeout=60)
