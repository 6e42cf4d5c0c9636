"""/v1/sandboxes end to end: API -> commands topic -> sandbox processor -> docker -> events -> API."""

import time

import httpx
from httpx_sse import connect_sse

from tests.support import auth, get_artifact, wait_until


def post(url: str, key: str, json=None, **params) -> httpx.Response:
    return httpx.post(url, headers=auth(key), json=json, params=params, timeout=120)


def create(api_url: str, key: str, **body) -> dict:
    r = post(f"{api_url}/v1/sandboxes", key, body)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_exec_files_stop(api_url, sandbox_processor, tenant, other_tenant) -> None:
    _, key = tenant
    sandbox = create(api_url, key, profile={"memory_mb": 256})
    assert sandbox["state"] == "ready" and sandbox["provider"] == "docker" and sandbox["id"].startswith("sb-")
    sid = sandbox["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"

    r = post(f"{base}/exec", key, {"command": "echo out; echo err >&2; exit 3"})
    result = r.json()
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "out\n", "err\n")
    assert result["output"] in ("out\nerr\n", "err\nout\n") and result["duration_ms"] > 0
    argv = post(f"{base}/exec", key, {"command": ["python", "-c", "import os; print(os.getcwd())"]}).json()
    assert argv["stdout"] == "/workspace\n" and argv["exit_code"] == 0

    put = httpx.put(f"{base}/files/notes/todo.txt", headers=auth(key), content=b"ship it\n")
    assert put.status_code == 200 and put.json()["size"] == 8
    got = httpx.get(f"{base}/files/notes/todo.txt", headers=auth(key))
    assert got.content == b"ship it\n"
    assert httpx.get(f"{base}/files/nope.txt", headers=auth(key)).status_code == 404
    assert httpx.put(f"{base}/files/etc/../../etc/passwd", headers=auth(key), content=b"x").status_code in (403, 404)

    # another tenant sees nothing
    _, other_key = other_tenant
    assert httpx.get(base, headers=auth(other_key)).status_code == 404
    assert post(f"{base}/exec", other_key, {"command": "id"}).status_code == 404

    # every command and its output is on the sandbox's stream
    events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()["items"]
    types = [e["type"] for e in events]
    assert types[:3] == ["sandbox.requested", "sandbox.provisioning", "sandbox.ready"]
    assert types.count("exec.started") == 2 and types.count("exec.finished") == 2
    assert {"file.written", "file.read"} <= set(types)

    assert post(f"{base}/stop", key).status_code == 202
    wait_until(lambda: httpx.get(base, headers=auth(key)).json()["state"] == "terminated", timeout=30)
    assert post(f"{base}/exec", key, {"command": "id"}).status_code == 409
    assert sid not in sandbox_processor.provider.list_ids()


def test_async_exec_streams_output_on_sse(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    accepted = post(
        f"{api_url}/v1/sandboxes/{sid}/exec",
        key,
        {"command": "for i in 1 2 3; do echo line $i; sleep 0.1; done", "async": True},
    ).json()
    command_id = accepted["command_id"]
    lines, finished = [], None
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        connect_sse(client, "GET", f"{api_url}/v1/streams/{sid}/events/sse", headers=auth(key)) as source,
    ):
        for event in source.iter_sse():
            if not event.data:
                continue
            body = event.json()
            if body["payload"].get("command_id") != command_id:
                continue
            if event.event == "exec.output":
                lines.append(body["payload"]["data"])
            if event.event == "exec.finished":
                finished = body["payload"]
                break
    assert "".join(lines) == "line 1\nline 2\nline 3\n"
    assert finished["exit_code"] == 0 and not finished["timed_out"]
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_idle_sandboxes_are_reaped_with_a_reason(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key, idle_timeout_s=5)["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"
    time.sleep(3)
    assert post(f"{base}/heartbeat", key).status_code == 202  # pushes the deadline out
    time.sleep(3)
    assert httpx.get(base, headers=auth(key)).json()["state"] == "ready"
    wait_until(lambda: httpx.get(base, headers=auth(key)).json()["state"] == "terminated", timeout=30)
    sandbox = httpx.get(base, headers=auth(key)).json()
    assert sandbox["reason"] == "idle_timeout"


def test_bad_requests_are_4xx_and_create_nothing(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    url = f"{api_url}/v1/sandboxes"
    for body, status in [
        ({"profile": {"memory_mb": 999_999}}, 422),
        ({"profile": {"privileged": 1}}, 422),
        ({"ttl_s": 1}, 422),
        ({"unknown": True}, 422),
        ({"egress_allow": ["GET too many parts"]}, 422),
    ]:
        r = post(url, key, body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]
    assert httpx.get(url, headers=auth(key)).json()["items"] == []
    assert httpx.get(f"{url}/sb-{'0' * 32}", headers=auth(key)).status_code == 404
    assert post(f"{url}/sb-{'0' * 32}/exec", key, {"command": "id"}).status_code == 404


def test_snapshot_restore_and_fork(api_url, sandbox_processor, tenant, other_tenant) -> None:
    _, key = tenant
    source = create(api_url, key)["id"]
    post(f"{api_url}/v1/sandboxes/{source}/exec", key, {"command": "mkdir -p src && echo 'print(42)' > src/app.py"})
    snap = post(f"{api_url}/v1/sandboxes/{source}/snapshots", key)
    assert snap.status_code == 201, snap.text
    snapshot = snap.json()
    assert snapshot["size"] > 0 and len(snapshot["sha256"]) == 64

    restored = create(api_url, key, restore_snapshot=snapshot["id"])
    assert restored["state"] == "ready", restored
    run = post(f"{api_url}/v1/sandboxes/{restored['id']}/exec", key, {"command": "python src/app.py"}).json()
    assert run["stdout"] == "42\n"

    forks = post(f"{api_url}/v1/snapshots/{snapshot['id']}/fork", key, {"count": 3})
    assert forks.status_code == 201, forks.text
    assert [f["state"] for f in forks.json()] == ["ready"] * 3
    for f in forks.json():
        assert (
            post(f"{api_url}/v1/sandboxes/{f['id']}/exec", key, {"command": "cat src/app.py"}).json()["stdout"]
            == "print(42)\n"
        )

    tarball = httpx.get(f"{api_url}/v1/artifacts/{snapshot['id']}", headers=auth(key))
    assert tarball.status_code == 200 and tarball.headers["x-sha256"] == snapshot["sha256"]

    _, other_key = other_tenant
    assert post(f"{api_url}/v1/snapshots/{snapshot['id']}/fork", other_key, {"count": 1}).status_code == 404
    assert httpx.get(f"{api_url}/v1/artifacts/{snapshot['id']}", headers=auth(other_key)).status_code == 404
    assert post(f"{api_url}/v1/sandboxes", other_key, {"restore_snapshot": snapshot["id"]}).status_code == 404
    for sid in [source, restored["id"], *(f["id"] for f in forks.json())]:
        post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_output_past_the_inline_limit_goes_to_the_artifact_store(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    result = post(
        f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "python -c \"print('a' * 3000000)\"; echo done >&2"}
    ).json()
    assert result["exit_code"] == 0 and not result["truncated"]
    inline = len(result["stdout"])
    assert 0 < inline <= 1024 * 1024
    rest = get_artifact(api_url, key, result["output_artifact"])
    assert rest.status_code == 200
    assert inline + len(rest.content) == 3_000_000 + 1 + len("done\n")
    assert set(rest.content.replace(b"\n", b"").replace(b"done", b"")) == {ord("a")}
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_creates_claim_the_warm_pool_first_and_it_refills(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    warm = sandbox_processor.warm  # pool 0: the defaults; pool 1: memory_mb=300 (tests/conftest.py)
    wait_until(lambda: len(warm[0]) >= 2 and len(warm[1]) >= 1, timeout=60, what="warm pools filled")
    before = set(warm[0]) | set(warm[1])
    sid = create(api_url, key)["id"]
    sized = create(api_url, key, profile={"memory_mb": 300})["id"]
    custom = create(api_url, key, profile={"memory_mb": 320})["id"]

    def ready_details(sandbox_id: str) -> dict:
        events = httpx.get(f"{api_url}/v1/streams/{sandbox_id}/events", headers=auth(key)).json()["items"]
        return next(e["payload"]["details"] for e in events if e["type"] == "sandbox.ready")

    hit, sized_hit = ready_details(sid), ready_details(sized)
    assert hit["warm_pool"] == "hit" and hit["provider_id"] in before
    assert sized_hit["warm_pool"] == "hit" and sized_hit["provider_id"].startswith("warm1-")
    assert ready_details(custom)["warm_pool"] == "miss"  # no pool of that profile
    assert post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "echo warm"}).json()["stdout"] == "warm\n"
    wait_until(lambda: len(warm[0]) >= 2 and len(warm[1]) >= 1, timeout=60, what="warm pools refilled")
    assert hit["provider_id"] not in warm[0]
    for s in (sid, sized, custom):
        post(f"{api_url}/v1/sandboxes/{s}/stop", key)
    wait_until(
        lambda: hit["provider_id"] not in sandbox_processor.provider.list_ids(), timeout=30, what="claimed stopped"
    )


def test_large_files_travel_through_the_artifact_store_and_export(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"
    blob = bytes(range(256)) * 8192  # 2 MiB: larger than a record may carry
    put = httpx.put(f"{base}/files/big.bin", headers=auth(key), content=blob, timeout=60)
    assert put.status_code == 200 and put.json()["size"] == len(blob), put.text
    check = post(f"{base}/exec", key, {"command": "sha256sum big.bin"}).json()
    import hashlib

    assert check["stdout"].split()[0] == hashlib.sha256(blob).hexdigest()
    assert httpx.get(f"{base}/files/big.bin", headers=auth(key), timeout=60).content == blob
    exported = httpx.get(f"{base}/files/big.bin", headers=auth(key), params={"export": "true"}, timeout=60).json()
    wait_until(
        lambda: httpx.get(f"{api_url}/v1/artifacts/{exported['artifact_id']}", headers=auth(key)).status_code == 200
    )
    assert httpx.get(f"{api_url}/v1/artifacts/{exported['artifact_id']}", headers=auth(key)).content == blob
    post(f"{base}/stop", key)


def test_cancel_kills_a_running_command(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    base = f"{api_url}/v1/sandboxes/{sid}"
    started = time.monotonic()
    command_id = post(f"{base}/exec", key, {"command": "sleep 60", "async": True}).json()["command_id"]

    def finished() -> dict | None:
        items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()[
            "items"
        ]
        return next(
            (e["payload"] for e in items if e["type"] == "exec.finished" and e["payload"]["command_id"] == command_id),
            None,
        )

    wait_until(
        lambda: any(
            e["type"] == "exec.started"
            for e in httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key)).json()["items"]
        ),
        timeout=20,
    )
    assert post(f"{base}/exec/{command_id}/cancel", key).status_code == 202
    wait_until(lambda: finished() is not None, timeout=20, what="cancelled command finished")
    done = finished()
    assert done["cancelled"] and done["exit_code"] == -9 and time.monotonic() - started < 30
    post(f"{base}/stop", key)


def test_the_processor_is_the_one_writer_of_a_sandboxs_lifecycle(api_url, sandbox_processor, tenant) -> None:
    """The API appends the command only; ``sandbox.requested`` comes from the processor, so nothing can
    reach the stream before it (a ``provisioning`` ahead of it left the sandbox ``requested`` forever)."""
    _, key = tenant
    answer = post(f"{api_url}/v1/sandboxes", key, {}, wait="false")
    assert answer.status_code == 201 and answer.json()["state"] == "requested", answer.text
    sid = answer.json()["id"]
    url = f"{api_url}/v1/sandboxes/{sid}"
    wait_until(lambda: httpx.get(url, headers=auth(key)).status_code == 200, timeout=30, what="projected")

    def lifecycle() -> list[dict]:
        items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key)).json()["items"]
        return [e for e in items if e["type"].startswith("sandbox.")]

    wait_until(lambda: any(e["type"] == "sandbox.ready" for e in lifecycle()), timeout=60, what="ready")
    records = lifecycle()
    assert [e["type"] for e in records[:3]] == ["sandbox.requested", "sandbox.provisioning", "sandbox.ready"]
    assert {e["actor"] for e in records} == {"processor:sandboxes"}
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_the_spec_travels_typed_from_the_request_to_the_processor(api_url, sandbox_processor, tenant) -> None:
    """One typed record, no string map: ``sandbox.requested`` carries the create's spec as
    ``astraforge.RequestedSandbox`` (numbers as numbers, the allowlist as a list) and the processor
    folds its state from it."""
    _, key = tenant
    body = {"profile": {"memory_mb": 320, "cpus": 0.5}, "idle_timeout_s": 120, "egress_allow": ["example.com"]}
    sid = create(api_url, key, **body)["id"]
    items = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key)).json()["items"]
    (asked,) = [e["payload"] for e in items if e["type"] == "sandbox.requested"]
    assert asked["details"] == {}
    assert asked["spec"] == {
        "image": asked["image"],
        "idle_timeout_s": 120,
        "ttl_s": 3600,
        "egress_allow": ["example.com"],
        "platform_upstreams": [],
        "restore_snapshot": None,
        "limits": {"memory_mb": 320, "cpus": 0.5, "pids": None, "workspace_mb": None, "tmp_mb": None, "home_mb": None},
    }
    state = sandbox_processor.state(sid)
    assert state.profile == {"memory_mb": 320, "cpus": 0.5} and state.egress_allow == ("example.com",)
    assert state.idle_timeout_s == 120
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_a_heartbeat_loop_records_one_heartbeat_per_second(api_url, sandbox_processor, tenant) -> None:
    """A client beating in a tight loop gets 202 every time but writes one record per sandbox per second."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    started = time.monotonic()
    assert all(post(f"{api_url}/v1/sandboxes/{sid}/heartbeat", key).status_code == 202 for _ in range(60))
    elapsed = time.monotonic() - started

    def heartbeats() -> list[dict]:
        events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()
        return [e for e in events["items"] if e["type"] == "sandbox.heartbeat.recorded"]

    wait_until(heartbeats, timeout=30, what="the first heartbeat recorded")
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)
    wait_until(lambda: httpx.get(f"{api_url}/v1/sandboxes/{sid}", headers=auth(key)).json()["state"] == "terminated")
    assert 1 <= len(heartbeats()) <= int(elapsed) + 1


def test_a_created_sandbox_is_listed_before_the_projection_has_it(running_processor) -> None:
    """A create answers from the processor's records, ahead of the projection: the list waits for a
    sandbox this API admitted, so create-then-list shows it. Here the projector starts only after
    the create answered (without the wait the list came back empty). An exec sent before the
    projector starts waits the same way (its one-statement ownership + quota check sees no row)."""
    from concurrent.futures import ThreadPoolExecutor

    from astraforge.db import connect
    from astraforge.keys import create_key
    from astraforge.projections.postgres import create_schema
    from tests.support import running_api, running_projector

    s = running_processor.settings
    with connect(s) as conn:
        create_schema(conn, s.projection_schema)
    key = create_key(s, "lister")
    with running_api(s) as url, ThreadPoolExecutor(1) as pool:
        sandbox = create(url, key)
        assert sandbox["state"] == "ready"
        executed = pool.submit(post, f"{url}/v1/sandboxes/{sandbox['id']}/exec", key, {"command": ["true"]})
        with running_projector(s):
            assert executed.result().status_code == 200 and executed.result().json()["exit_code"] == 0
            listed = httpx.get(f"{url}/v1/sandboxes", headers=auth(key), timeout=30).json()["items"]
            assert [item["id"] for item in listed] == [sandbox["id"]]
            assert httpx.get(f"{url}/v1/sandboxes", headers=auth(key), params={"after": sandbox["id"]}).json() == {
                "items": [],
                "next_after": None,
            }


def test_the_list_does_not_wait_for_a_sandbox_nobody_created(fresh_settings) -> None:
    """A run's sandbox is held against the quota from the run's request on, but the orchestrator
    creates it later, or never (a run cancelled first; here no orchestrator runs): the list waited
    its whole limit (10 s) for it, on every call for the hold's two minutes. It waits only for
    sandboxes whose create this API appended."""
    from astraforge.db import connect
    from astraforge.keys import create_key
    from astraforge.projections.postgres import create_schema
    from tests.support import running_api

    s = fresh_settings.model_copy(update={"repo_allowlist": {"*": ["/nowhere/*.git"]}})
    with connect(s) as conn:
        create_schema(conn, s.projection_schema)
    key = create_key(s, "runner")
    with running_api(s) as url:
        body = {"spec": "x", "repository": "/nowhere/repo.git", "steps": [{"run": "true"}]}
        run = httpx.post(f"{url}/v1/requests", headers=auth(key), json=body, timeout=60)
        assert run.status_code == 201, run.text  # answered "requested" once the orchestrator's wait ran out
        listed = httpx.get(f"{url}/v1/sandboxes", headers=auth(key), timeout=5)  # the wait is 10 s
        assert listed.json() == {"items": [], "next_after": None}
