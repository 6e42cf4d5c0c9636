"""A lease holds against shell commands, attacked end to end through the public API on both providers.

Actor A (``tenant:<id>/a``) leases ``/workspace/leased.py``; actor B (the same tenant's key without
``X-Lease-Holder``: ``tenant:<id>``) runs commands through the exec endpoint that change the file every
way a shell can. Guaranteed (``processors/sandboxes/lease_guard.py``): when B's command ends, the file
holds A's bytes and mode again, B's answer says ``lease_violated`` naming the file and A, and a
``lease.violated`` record names B. Not guaranteed: readers see B's bytes while B's command runs; a
process B leaves running may change the file after the check; a file replaced by a directory with
something in it, or one whose directory B swapped for a symlink, is reported but not put back.
"""

import httpx

from astraforge.artifacts import make_artifact_store
from astraforge.processors.conversations.backend import RecordedSandbox
from astraforge.processors.runtime import append_durably
from tests.integration.test_sandbox_api import create, post
from tests.support import auth, wait_until

LEASED = "/workspace/leased.py"
ORIGINAL = b"print('a')\n"
ATTACKS = {
    "redirect": "echo pwned > leased.py",
    "append": "echo pwned >> /workspace/leased.py",
    "rename over": "echo pwned > other.py && mv other.py leased.py",
    "delete": "rm leased.py",
    "symlink": "echo pwned > /tmp/evil && rm leased.py && ln -s /tmp/evil leased.py",
    "hard link": "ln leased.py alias && echo pwned > alias",
    "proc fd": "exec 3<>leased.py && echo pwned > /proc/self/fd/3",
    "chmod": "chmod 0777 leased.py",
    "fifo": "rm leased.py && mkfifo leased.py",
}


def _exec(url: str, key: str, sid: str, command: str, holder: str | None = None) -> dict:
    headers = {"X-Lease-Holder": holder} if holder else {}
    r = httpx.post(f"{url}/v1/sandboxes/{sid}/exec", headers={**auth(key), **headers}, json={"command": command},
                   timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def _events(url: str, key: str, sid: str, type_: str) -> list[dict]:
    r = httpx.get(f"{url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 1000}, timeout=30)
    return [e for e in r.json()["items"] if e["type"] == type_]


def _started(url: str, key: str, sid: str, command: str) -> str:
    """Start B's ``command`` asynchronously; its command id once it created ``/workspace/started``
    (the command does that first and then waits for ``/workspace/go``: the test orders what comes between)."""
    wait = f"{command} && touch /workspace/started && while [ ! -e /workspace/go ]; do sleep 0.05; done"
    started = post(f"{url}/v1/sandboxes/{sid}/exec", key, {"command": wait, "async": True})
    assert started.status_code == 200, started.text
    present = lambda: httpx.get(f"{url}/v1/sandboxes/{sid}/files/started", headers=auth(key)).status_code == 200  # noqa: E731
    wait_until(present, timeout=30, what="B's command to start")
    return started.json()["command_id"]


def _finished(url: str, key: str, sid: str, cid: str) -> dict:
    """Let B's command (``_started``) go on and end; its ``exec.finished`` payload."""
    assert httpx.put(f"{url}/v1/sandboxes/{sid}/files/go", headers=auth(key), content=b"").status_code == 200
    mine = lambda: [e for e in _events(url, key, sid, "exec.finished") if e["payload"]["command_id"] == cid]  # noqa: E731
    wait_until(lambda: bool(mine()), timeout=30, what="B's command to end")
    (finished,) = mine()
    return finished["payload"]


def test_another_actors_command_cannot_keep_a_change_to_a_leased_file(platform) -> None:
    url, key = platform.api_url, platform.tenant_key()
    sid = create(url, key)["id"]
    lease = post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": LEASED, "holder": "a", "ttl_s": 600})
    assert lease.status_code == 201, lease.text
    holder = lease.json()["holder"]
    put = httpx.put(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers={**auth(key), "X-Lease-Holder": "a"},
                    content=ORIGINAL, timeout=30)  # fmt: skip
    assert put.status_code == 200, put.text

    for name, attack in ATTACKS.items():
        result = _exec(url, key, sid, attack)
        error = result["error"] or ""
        assert error.startswith("lease_violated: ") and LEASED in error and holder in error, (name, result)
        assert "undone" in error, (name, error)
        state = _exec(url, key, sid, "stat -c '%F %a %h' leased.py && cat leased.py", holder="a")
        assert state["stdout"] == "regular file 644 1\n" + ORIGINAL.decode(), (name, state)

    violations = _events(url, key, sid, "lease.violated")[: len(ATTACKS)]
    for record in violations:
        p = record["payload"]
        assert (p["path"], p["holder"], p["restored"]) == (LEASED, holder, True)
        assert p["violator"] == holder.removesuffix("/a")  # B: the tenant's key, naming no holder
    assert {v["payload"]["found"] for v in violations} >= {"changed", "deleted", "symlink"}

    # a leased file that did not exist yet: B's file is removed again
    planned = post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": "/workspace/planned.py", "holder": "a"})
    assert planned.status_code == 201, planned.text
    created = _exec(url, key, sid, "echo pwned > planned.py")
    assert "planned.py is leased by" in created["error"] and "created it and the change was undone" in created["error"]
    assert _exec(url, key, sid, "ls planned.py", holder="a")["exit_code"] != 0

    # a file turned into an (empty) directory is put back; one with something in it is reported only
    emptied = _exec(url, key, sid, "rm leased.py && mkdir leased.py")
    assert "replaced it with something not a file and the change was undone" in emptied["error"], emptied
    assert _exec(url, key, sid, "cat leased.py", holder="a")["stdout"] == ORIGINAL.decode()
    dir_attack = _exec(url, key, sid, "rm leased.py && mkdir leased.py && touch leased.py/x")
    assert "leased.py is leased by" in dir_attack["error"] and "could not be put back" in dir_attack["error"]
    assert _events(url, key, sid, "lease.violated")[-1]["payload"]["restored"] is False
    mended = _exec(url, key, sid, f"rm -r leased.py && printf %s {ORIGINAL.decode()!r} > leased.py", holder="a")
    assert mended["error"] is None and mended["exit_code"] == 0, mended

    # the holder's own command changes it, and a command touching no leased file is answered as before
    mine = _exec(url, key, sid, "echo mine > leased.py", holder="a")
    assert mine["error"] is None and mine["exit_code"] == 0
    plain = _exec(url, key, sid, "echo ok > notes.txt && cat leased.py")
    assert plain["error"] is None and plain["stdout"] == "mine\n"


def test_the_holders_write_during_anothers_command_is_kept(platform) -> None:
    """A writes its leased file (and runs a command) while B's command runs: B's check compares with
    A's new bytes, so A's write stays and B is not blamed. The order is made deterministic: B's
    command waits for a file the test creates after A's write."""
    url, key = platform.api_url, platform.tenant_key()
    sid = create(url, key)["id"]
    assert post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": LEASED, "holder": "a"}).status_code == 201
    a = {**auth(key), "X-Lease-Holder": "a"}
    assert httpx.put(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers=a, content=ORIGINAL).status_code == 200
    cid = _started(url, key, sid, "true")
    assert httpx.put(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers=a, content=b"v2\n").status_code == 200
    mine = _exec(url, key, sid, "cat leased.py > copy.py", holder="a")  # the holder runs a command meanwhile
    assert mine["error"] is None
    finished = _finished(url, key, sid, cid)
    assert finished["error"] is None and finished["exit_code"] == 0
    assert _events(url, key, sid, "lease.violated") == []
    assert httpx.get(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers=auth(key)).content == b"v2\n"


def test_a_conversations_agent_is_told_its_command_was_undone(settings, api_url, sandbox_processor, producer, tenant):
    """A conversation's ``execute`` (its agent's shell tool) against a file an API client leased: the
    agent's tool output ends with the ``lease_violated`` error naming file and holder; the file is the
    holder's again and the record names the conversation."""
    tenant_id, key = tenant
    sid = create(api_url, key)["id"]
    assert post(f"{api_url}/v1/sandboxes/{sid}/leases", key, {"path": LEASED, "holder": "a"}).status_code == 201
    a = {**auth(key), "X-Lease-Holder": "a"}
    assert httpx.put(f"{api_url}/v1/sandboxes/{sid}/files/leased.py", headers=a, content=ORIGINAL).status_code == 200
    backend = RecordedSandbox(
        settings,
        make_artifact_store(settings),
        lambda events: append_durably(producer, events, lambda: False),
        tenant_id,
        sid,
        "conversation:cv-b",
        lambda: False,
        offload_bytes=64 * 1024,
    )
    try:
        out = backend.execute("echo pwned > leased.py; echo written")
    finally:
        backend.close()
    assert out.output.startswith("written\n") and out.exit_code == 0
    assert f"[error: lease_violated: {LEASED} is leased by tenant:{tenant_id}/a;" in out.output, out.output
    assert httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/leased.py", headers=auth(key)).content == ORIGINAL
    (violation,) = _events(api_url, key, sid, "lease.violated")
    assert violation["payload"]["violator"] == "conversation:cv-b"


def test_the_holders_write_to_one_file_does_not_adopt_anothers_change_to_another(platform) -> None:
    """A holds two files; B's command changes the second, then A writes the first while B's command
    still runs: A's write is kept, and B's change to the second file is still undone and blamed on B
    (the write re-reads the file it wrote only, not everything its writer holds)."""
    url, key = platform.api_url, platform.tenant_key()
    sid = create(url, key)["id"]
    for path in (LEASED, "/workspace/second.py"):
        assert post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": path, "holder": "a"}).status_code == 201
    a = {**auth(key), "X-Lease-Holder": "a"}
    for name in ("leased.py", "second.py"):
        assert httpx.put(f"{url}/v1/sandboxes/{sid}/files/{name}", headers=a, content=ORIGINAL).status_code == 200
    cid = _started(url, key, sid, "echo pwned > second.py")
    assert httpx.put(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers=a, content=b"v2\n").status_code == 200
    finished = _finished(url, key, sid, cid)
    assert "/workspace/second.py is leased by" in (finished["error"] or ""), finished
    (violation,) = _events(url, key, sid, "lease.violated")
    assert (violation["payload"]["path"], violation["payload"]["restored"]) == ("/workspace/second.py", True)
    assert httpx.get(f"{url}/v1/sandboxes/{sid}/files/second.py", headers=auth(key)).content == ORIGINAL
    assert httpx.get(f"{url}/v1/sandboxes/{sid}/files/leased.py", headers=auth(key)).content == b"v2\n"


def test_a_leased_file_grown_huge_cannot_stall_the_check(platform) -> None:
    """B changes one leased file and makes another a sparse terabyte: the check after B's command
    must not hash the terabyte (it gave up after its timeout and left both changes unreported and in
    place). Both files are put back and both changes reported."""
    url, key = platform.api_url, platform.tenant_key()
    sid = create(url, key)["id"]
    a = {**auth(key), "X-Lease-Holder": "a"}
    try:
        for name in ("first.py", "second.py"):
            lease = post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": f"/workspace/{name}", "holder": "a"})
            assert lease.status_code == 201, lease.text
            put = httpx.put(f"{url}/v1/sandboxes/{sid}/files/{name}", headers=a, content=ORIGINAL, timeout=30)
            assert put.status_code == 200, put.text
        result = _exec(url, key, sid, "echo pwned > first.py && truncate -s 1T second.py")
        error = result["error"] or ""
        assert "first.py is leased by" in error and "second.py is leased by" in error, result
        for name in ("first.py", "second.py"):
            state = _exec(url, key, sid, f"stat -c %s {name} && cat {name}", holder="a")
            assert state["stdout"] == f"{len(ORIGINAL)}\n{ORIGINAL.decode()}", (name, state)
    finally:
        httpx.delete(f"{url}/v1/sandboxes/{sid}", headers=auth(key), timeout=30)


def test_a_leased_path_made_unreachable_is_still_checked(platform) -> None:
    """B turns the leased file's directory into a file (or takes its own search permission away):
    fingerprinting that path fails (ENOTDIR, EACCES), and that one failure left the whole check
    undone, the change unreported, and B's next command unwatched. Each path is judged alone: the
    change is reported, and B's next command is watched."""
    url, key = platform.api_url, platform.tenant_key()
    sid = create(url, key)["id"]
    a = {**auth(key), "X-Lease-Holder": "a"}
    try:
        for path in ("/workspace/src/a.py", "/workspace/b.py"):
            lease = post(f"{url}/v1/sandboxes/{sid}/leases", key, {"path": path, "holder": "a"})
            assert lease.status_code == 201, lease.text
            put = httpx.put(
                f"{url}/v1/sandboxes/{sid}/files{path.removeprefix('/workspace')}",
                headers=a,
                content=ORIGINAL,
                timeout=30,
            )
            assert put.status_code == 200, put.text

        gone = _exec(url, key, sid, "echo pwned > b.py && rm -r src && touch src")
        assert "src/a.py is leased by" in (gone["error"] or "") and "b.py is leased by" in gone["error"], gone
        assert _exec(url, key, sid, "cat b.py", holder="a")["stdout"] == ORIGINAL.decode()
        back = _exec(url, key, sid, "rm src && mkdir src && echo pwned > src/a.py && echo pwned > b.py")
        assert "src/a.py is leased by" in (back["error"] or "") and "b.py is leased by" in back["error"], back
        assert _exec(url, key, sid, "cat b.py; ls src", holder="a")["stdout"] == ORIGINAL.decode()

        hidden = _exec(url, key, sid, "echo pwned > b.py && chmod 0 /workspace/src")
        assert "src/a.py is leased by" in (hidden["error"] or "") and "b.py is leased by" in hidden["error"], hidden
        assert _exec(url, key, sid, "cat b.py", holder="a")["stdout"] == ORIGINAL.decode()
        shown = _exec(url, key, sid, "chmod 755 /workspace/src && echo pwned > b.py")
        assert "b.py is leased by" in (shown["error"] or ""), shown
        assert _exec(url, key, sid, "cat b.py", holder="a")["stdout"] == ORIGINAL.decode()

        proc = _exec(url, key, sid, "echo pwned > b.py && rm -f src/a.py && ln -s /proc/self/environ src/a.py")
        assert "src/a.py is leased by" in (proc["error"] or "") and "b.py is leased by" in proc["error"], proc
        assert _exec(url, key, sid, "cat b.py; ls src", holder="a")["stdout"] == ORIGINAL.decode()
    finally:
        httpx.delete(f"{url}/v1/sandboxes/{sid}", headers=auth(key), timeout=30)
