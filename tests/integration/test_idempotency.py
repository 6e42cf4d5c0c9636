"""``Idempotency-Key`` through the public API, with the sandbox processor running: a retried POST
creates or runs its thing once, across API instances, per tenant."""

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest

from astraforge.api.idempotency import LEASE_S
from astraforge.db import connect
from tests.support import auth, cli_env, free_port, running_api, wait_until

COUNT = "/workspace/runs"
# appends one line per execution: the file's line count is how many times it ran
APPEND = f"echo ran >> {COUNT}; wc -l < {COUNT}"


def post(url: str, key: str, body: dict | None = None, idem: str | None = None, **params) -> httpx.Response:
    headers = auth(key) | ({"Idempotency-Key": idem} if idem is not None else {})
    return httpx.post(url, headers=headers, json=body, params=params, timeout=120)


def runs(api_url: str, key: str, sandbox_id: str) -> int:
    r = post(f"{api_url}/v1/sandboxes/{sandbox_id}/exec", key, {"command": f"cat {COUNT} 2>/dev/null | wc -l"})
    assert r.status_code == 200, r.text
    return int(r.json()["stdout"])


def sandboxes_of(api_url: str, key: str) -> list[str]:
    return [s["id"] for s in httpx.get(f"{api_url}/v1/sandboxes", headers=auth(key)).json()["items"]]


def test_a_retried_create_returns_the_same_sandbox_and_creates_one(
    api_url, sandbox_processor, docker_provider, tenant
) -> None:
    """A profile no warm pool serves, so the sandbox is a container of its own, named after it."""
    _, key = tenant
    idem, spec = str(uuid.uuid4()), {"idle_timeout_s": 300, "profile": {"memory_mb": 256}}
    before = docker_provider.list_ids()
    first = post(f"{api_url}/v1/sandboxes", key, spec, idem)
    again = post(f"{api_url}/v1/sandboxes", key, spec, idem)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json() and first.json()["state"] == "ready"
    assert again.headers["Idempotent-Replayed"] == "true"
    sid = first.json()["id"]
    assert sandboxes_of(api_url, key) == [sid]
    events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}).json()
    types = [e["type"] for e in events["items"]]
    assert types.count("sandbox.requested") == 1 and types.count("sandbox.provisioning") == 1
    assert types.count("sandbox.ready") == 1
    created = {i for i in docker_provider.list_ids() - before if i.startswith("sb-")}
    assert created == {sid}  # one container (warm-pool refills are named after their pool, not "sb-")
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


@pytest.fixture
def sandbox(api_url, sandbox_processor, tenant) -> str:
    _, key = tenant
    r = post(f"{api_url}/v1/sandboxes", key, {})
    assert r.status_code == 201, r.text
    yield r.json()["id"]
    post(f"{api_url}/v1/sandboxes/{r.json()['id']}/stop", key)


def test_a_retried_exec_runs_once(api_url, tenant, sandbox) -> None:
    _, key = tenant
    url, idem = f"{api_url}/v1/sandboxes/{sandbox}/exec", str(uuid.uuid4())
    first = post(url, key, {"command": APPEND}, idem)
    again = post(url, key, {"command": APPEND}, idem)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json() and first.json()["stdout"] == "1\n"
    assert runs(api_url, key, sandbox) == 1
    other = post(url, key, {"command": APPEND}, str(uuid.uuid4()))  # a new key is a new request
    assert other.json()["stdout"] == "2\n" and other.json()["command_id"] != first.json()["command_id"]


def test_an_async_exec_a_snapshot_and_a_fork_retried_happen_once(api_url, tenant, sandbox) -> None:
    _, key = tenant
    base, idem = f"{api_url}/v1/sandboxes/{sandbox}", str(uuid.uuid4())
    accepted = [post(f"{base}/exec", key, {"command": APPEND, "async": True}, idem) for _ in range(2)]
    assert accepted[0].json() == accepted[1].json()
    wait_until(lambda: runs(api_url, key, sandbox) == 1, timeout=30, what="the async exec")
    snap_key = str(uuid.uuid4())
    snapshots = [post(f"{base}/snapshots", key, None, snap_key) for _ in range(2)]
    assert snapshots[0].status_code == snapshots[1].status_code == 201, snapshots[0].text
    assert snapshots[0].json() == snapshots[1].json()
    events = httpx.get(f"{api_url}/v1/streams/{sandbox}/events", headers=auth(key), params={"limit": 1000}).json()
    assert [e["type"] for e in events["items"]].count("snapshot.created") == 1
    assert runs(api_url, key, sandbox) == 1
    fork_url, fork_key = f"{api_url}/v1/snapshots/{snapshots[0].json()['id']}/fork", str(uuid.uuid4())
    forks = [post(fork_url, key, {"count": 2}, fork_key) for _ in range(2)]
    assert forks[0].status_code == forks[1].status_code == 201, forks[0].text
    assert forks[0].json() == forks[1].json() and [f["state"] for f in forks[0].json()] == ["ready"] * 2
    forked = {f["id"] for f in forks[0].json()}
    assert set(sandboxes_of(api_url, key)) == {sandbox} | forked
    for sid in forked:
        post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_keys_are_shared_by_api_instances(settings, api_url, tenant, sandbox) -> None:
    _, key = tenant
    idem, exec_key = str(uuid.uuid4()), str(uuid.uuid4())
    with running_api(settings) as other_api:
        created = [post(f"{url}/v1/sandboxes", key, {}, idem) for url in (api_url, other_api)]
        assert created[0].json()["id"] == created[1].json()["id"]
        executed = [
            post(f"{url}/v1/sandboxes/{sandbox}/exec", key, {"command": APPEND}, exec_key)
            for url in (api_url, other_api)
        ]
    assert executed[0].json() == executed[1].json()
    assert runs(api_url, key, sandbox) == 1
    assert len(sandboxes_of(api_url, key)) == 2  # the fixture's and the one created through both instances
    post(f"{api_url}/v1/sandboxes/{created[0].json()['id']}/stop", key)


def test_another_tenant_s_same_key_gets_its_own_result(api_url, sandbox_processor, tenant, other_tenant) -> None:
    (_, key_a), (_, key_b) = tenant, other_tenant
    idem = str(uuid.uuid4())
    a = post(f"{api_url}/v1/sandboxes", key_a, {}, idem).json()
    b = post(f"{api_url}/v1/sandboxes", key_b, {}, idem).json()
    assert a["id"] != b["id"]
    assert sandboxes_of(api_url, key_b) == [b["id"]] and sandboxes_of(api_url, key_a) == [a["id"]]
    assert post(f"{api_url}/v1/sandboxes", key_a, {}, idem).json() == a  # A's retry still answers A's
    # the same key runs a command in each tenant's own sandbox, and each gets its own answer back
    exec_key = str(uuid.uuid4())
    ran_a = post(f"{api_url}/v1/sandboxes/{a['id']}/exec", key_a, {"command": APPEND}, exec_key).json()
    ran_b = post(f"{api_url}/v1/sandboxes/{b['id']}/exec", key_b, {"command": APPEND}, exec_key).json()
    assert ran_a["command_id"] != ran_b["command_id"] and ran_b["stdout"] == "1\n"
    assert post(f"{api_url}/v1/sandboxes/{a['id']}/exec", key_a, {"command": APPEND}, exec_key).json() == ran_a
    assert runs(api_url, key_a, a["id"]) == 1 and runs(api_url, key_b, b["id"]) == 1
    for sid, key in ((a["id"], key_a), (b["id"], key_b)):
        post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "naïve", "semi;colon", "new\tline"])
def test_bad_keys_are_refused_with_400(api_url, tenant, bad) -> None:
    _, key = tenant
    r = httpx.post(f"{api_url}/v1/sandboxes", headers=auth(key) | {"Idempotency-Key": bad.encode()}, json={})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_idempotency_key"
    assert sandboxes_of(api_url, key) == []


def test_a_key_reused_for_another_request_is_422(api_url, tenant, sandbox) -> None:
    _, key = tenant
    url, idem = f"{api_url}/v1/sandboxes/{sandbox}/exec", str(uuid.uuid4())
    assert post(url, key, {"command": APPEND}, idem).status_code == 200
    body = post(url, key, {"command": "echo something else"}, idem)
    assert body.status_code == 422 and body.json()["error"]["code"] == "idempotency_key_reused"
    assert body.json()["error"]["details"] == {"differs": "request body"}
    route = post(f"{api_url}/v1/sandboxes/{sandbox}/snapshots", key, None, idem)
    assert route.status_code == 422 and route.json()["error"]["details"] == {"differs": "operation"}
    assert runs(api_url, key, sandbox) == 1


def test_a_request_refused_before_it_ran_frees_its_key(api_url, tenant, sandbox) -> None:
    _, key = tenant
    idem = str(uuid.uuid4())
    post(f"{api_url}/v1/sandboxes/{sandbox}/stop", key)
    wait_until(
        lambda: httpx.get(f"{api_url}/v1/sandboxes/{sandbox}", headers=auth(key)).json()["state"] == "terminated",
        timeout=30,
    )
    url = f"{api_url}/v1/sandboxes/{sandbox}/exec"
    assert post(url, key, {"command": APPEND}, idem).status_code == 409  # refused: nothing appended
    fresh = post(f"{api_url}/v1/sandboxes", key, {}, idem)  # so the key is free for another request
    assert fresh.status_code == 201, fresh.text
    assert post(f"{api_url}/v1/sandboxes", key, {}, idem).json() == fresh.json()  # ...which now holds it
    post(f"{api_url}/v1/sandboxes/{fresh.json()['id']}/stop", key)


def test_a_concurrent_duplicate_does_not_run_twice(api_url, tenant, sandbox) -> None:
    """The first request holds its key while its command waits for a go-ahead file; a duplicate
    sent meanwhile answers 409 ``idempotency_in_progress``; once the first is answered, the
    duplicate gets the same answer. The command ran once."""
    _, key = tenant
    url, idem = f"{api_url}/v1/sandboxes/{sandbox}/exec", str(uuid.uuid4())
    gated = {"command": f"while [ ! -e /workspace/go ]; do sleep 0.05; done; {APPEND}"}
    answers: list[httpx.Response] = []
    first = threading.Thread(target=lambda: answers.append(post(url, key, gated, idem)))
    first.start()

    def started() -> bool:
        events = httpx.get(f"{api_url}/v1/streams/{sandbox}/events", headers=auth(key), params={"limit": 1000})
        return "exec.started" in [e["type"] for e in events.json()["items"]]

    wait_until(started, timeout=30, what="the first exec to start")
    duplicate = post(url, key, gated, idem)
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["error"]["code"] == "idempotency_in_progress" and duplicate.headers["Retry-After"]
    time.sleep(LEASE_S + 1)  # the holder renews its lease: a request running past one lease still holds the key
    headers = auth(key) | {"Idempotency-Key": idem}
    assert httpx.post(url, headers=headers, json=gated, timeout=10).status_code == 409  # (a take-over would hang)
    assert post(url, key, {"command": "touch /workspace/go"}).status_code == 200
    first.join(timeout=60)
    assert answers and answers[0].status_code == 200 and answers[0].json()["stdout"] == "1\n"
    assert post(url, key, gated, idem).json() == answers[0].json()
    assert runs(api_url, key, sandbox) == 1


def test_a_retry_after_the_first_instance_went_away_picks_up_the_same_command(
    settings, api_url, tenant, sandbox
) -> None:
    """The instance holding the key shuts down while its command runs (its request is cancelled):
    a retry on another instance takes the key over and answers that command's result, read from
    the stream, without appending the command again."""
    _, key = tenant
    idem = str(uuid.uuid4())
    gated = {"command": f"while [ ! -e /workspace/go ]; do sleep 0.05; done; {APPEND}"}
    lost: list[httpx.Response | Exception] = []

    def started() -> bool:
        events = httpx.get(f"{api_url}/v1/streams/{sandbox}/events", headers=auth(key), params={"limit": 1000})
        return "exec.started" in [e["type"] for e in events.json()["items"]]

    with running_api(settings, graceful_s=0.5) as doomed:

        def call() -> None:
            try:
                lost.append(post(f"{doomed}/v1/sandboxes/{sandbox}/exec", key, gated, idem))
            except httpx.HTTPError as e:
                lost.append(e)

        first = threading.Thread(target=call)
        first.start()
        wait_until(started, timeout=30, what="the first exec to start")
    first.join(timeout=30)
    # the first attempt got no answer (a broken connection, or the 500 uvicorn sends for a cancelled request)
    assert lost and (not isinstance(lost[0], httpx.Response) or lost[0].status_code == 500), lost
    answers: list[httpx.Response] = []
    retry = threading.Thread(
        target=lambda: answers.append(post(f"{api_url}/v1/sandboxes/{sandbox}/exec", key, gated, idem))
    )
    retry.start()
    assert post(f"{api_url}/v1/sandboxes/{sandbox}/exec", key, {"command": "touch /workspace/go"}).status_code == 200
    retry.join(timeout=60)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    assert answers[0].json()["stdout"] == "1\n"
    assert runs(api_url, key, sandbox) == 1


def test_a_retried_upload_writes_once_and_another_body_is_422(api_url, tenant, sandbox) -> None:
    _, key = tenant
    url, idem = f"{api_url}/v1/sandboxes/{sandbox}/files/notes.txt", str(uuid.uuid4())
    puts = [httpx.put(url, headers=auth(key) | {"Idempotency-Key": idem}, content=b"v1\n") for _ in range(2)]
    assert puts[0].status_code == puts[1].status_code == 200 and puts[0].json() == puts[1].json()
    other = httpx.put(url, headers=auth(key) | {"Idempotency-Key": idem}, content=b"v2\n")
    assert other.status_code == 422 and other.json()["error"]["details"] == {"differs": "request body"}
    assert httpx.get(url, headers=auth(key)).content == b"v1\n"
    events = httpx.get(f"{api_url}/v1/streams/{sandbox}/events", headers=auth(key), params={"limit": 1000}).json()
    assert [e["type"] for e in events["items"]].count("file.written") == 1


def test_a_key_is_kept_for_24_hours_then_forgotten(settings, api_url, sandbox_processor, tenant) -> None:
    """Within 24 h a retry answers the first result; a key past its 24 h names a new request.
    (Time is moved by ageing the key's row, the one thing the test touches below the API.)"""
    tenant_id, key = tenant
    idem = str(uuid.uuid4())
    first = post(f"{api_url}/v1/sandboxes", key, {}, idem).json()
    assert post(f"{api_url}/v1/sandboxes", key, {}, idem).json() == first
    with connect(settings, autocommit=True) as conn:
        kept = conn.execute(
            "SELECT expires_at - created_at AS kept FROM idempotency_keys WHERE tenant_id = %s AND key = %s",
            (tenant_id, idem),
        ).fetchone()["kept"]
        assert kept == timedelta(hours=24)
        conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - interval '24 hours',"
            " expires_at = expires_at - interval '24 hours' WHERE tenant_id = %s AND key = %s",
            (tenant_id, idem),
        )
    later = post(f"{api_url}/v1/sandboxes", key, {}, idem).json()
    assert later["id"] != first["id"]
    assert post(f"{api_url}/v1/sandboxes", key, {}, idem).json() == later
    for sid in (first["id"], later["id"]):
        post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_a_retry_after_the_first_instance_was_killed_takes_the_key_over(
    settings, api_url, tenant, sandbox, tmp_path
) -> None:
    """kill -9 the API instance holding the key while its command runs: the key stays held (409)
    until the lease it no longer renews lapses, then a retry elsewhere answers that command's
    result from the stream, and the command ran once."""
    _, key = tenant
    idem, port = str(uuid.uuid4()), free_port()
    gated = {"command": f"while [ ! -e /workspace/go ]; do sleep 0.05; done; {APPEND}"}
    with (tmp_path / "api.log").open("wb") as log:
        doomed = subprocess.Popen(
            [sys.executable, "-m", "astraforge.cli", "api", "--port", str(port)],
            env=cli_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=5).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout=60, what=f"the API on {port}: {(tmp_path / 'api.log').read_text()}")
        threading.Thread(
            target=lambda: _quietly(post, f"{url}/v1/sandboxes/{sandbox}/exec", key, gated, idem), daemon=True
        ).start()

        def started() -> bool:
            events = httpx.get(f"{api_url}/v1/streams/{sandbox}/events", headers=auth(key), params={"limit": 1000})
            return "exec.started" in [e["type"] for e in events.json()["items"]]

        wait_until(started, timeout=30, what="the first exec to start")
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
    assert post(f"{api_url}/v1/sandboxes/{sandbox}/exec", key, {"command": "touch /workspace/go"}).status_code == 200
    answers: list[httpx.Response] = []

    def answered() -> bool:
        r = post(f"{api_url}/v1/sandboxes/{sandbox}/exec", key, gated, idem)
        assert r.status_code in (200, 409), r.text
        answers.append(r)
        return r.status_code == 200

    wait_until(answered, timeout=60, interval=0.5, what="the key's lease to lapse")
    assert answers[-1].json()["stdout"] == "1\n"
    assert runs(api_url, key, sandbox) == 1


def _quietly(call, *args) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the instance answering it was killed
        call(*args)


def _died_unrecorded(settings, tenant_id: str, idem: str) -> None:
    """The key as an instance leaves it when it dies between Kafka's acknowledgement and recording
    it (state "claimed", no answer) and its lease has lapsed: the crash window, made exact."""
    with connect(settings, autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE idempotency_keys SET state = 'claimed', status = NULL, response = NULL,"
            " lease_until = now() WHERE tenant_id = %s AND key = %s",
            (tenant_id, idem),
        )
        assert changed.rowcount == 1


def test_a_retry_that_cannot_tell_whether_the_first_attempt_appended_still_acts_once(
    settings, api_url, tenant, sandbox
) -> None:
    tenant_id, key = tenant
    create_key_, exec_key = str(uuid.uuid4()), str(uuid.uuid4())
    created = post(f"{api_url}/v1/sandboxes", key, {}, create_key_).json()
    _died_unrecorded(settings, tenant_id, create_key_)
    assert post(f"{api_url}/v1/sandboxes", key, {}, create_key_).json()["id"] == created["id"]
    events = httpx.get(f"{api_url}/v1/streams/{created['id']}/events", headers=auth(key), params={"limit": 1000})
    assert [e["type"] for e in events.json()["items"]].count("sandbox.requested") == 1

    url = f"{api_url}/v1/sandboxes/{sandbox}/exec"
    first = post(url, key, {"command": APPEND}, exec_key).json()
    _died_unrecorded(settings, tenant_id, exec_key)
    headers = auth(key) | {"Idempotency-Key": exec_key}
    again = httpx.post(url, headers=headers, json={"command": APPEND}, timeout=30)  # its answer came long ago
    assert again.status_code == 200, again.text
    assert again.json() == first and runs(api_url, key, sandbox) == 1
    post(f"{api_url}/v1/sandboxes/{created['id']}/stop", key)


def test_an_exec_whose_output_holds_a_nul_answers_and_replays_it(api_url, tenant, sandbox) -> None:
    """PostgreSQL's jsonb refuses NUL, which ``grep -Z`` output carries: the answer kept under the
    key held it and the exec answered 500 (deepagents' grep runs exactly that)."""
    _, key = tenant
    url, idem = f"{api_url}/v1/sandboxes/{sandbox}/exec", str(uuid.uuid4())
    first = post(url, key, {"command": "printf 'a\\0b'"}, idem)
    again = post(url, key, {"command": "printf 'a\\0b'"}, idem)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["stdout"] == "a\0b" and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
