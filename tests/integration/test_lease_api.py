"""File leases through the API as an attacker would take them: one file under several spellings, and a
second tenant reaching for the first one's sandbox."""

import httpx

from astraforge import leases as lease_store
from astraforge.db import connect
from tests.integration.test_sandbox_api import create, post
from tests.support import auth


def test_a_lease_holds_a_file_under_every_spelling_of_its_path(
    api_url, sandbox_processor, tenant, other_tenant
) -> None:
    """A lease taken as ``/workspace/./notes//a.txt`` is the lease of ``/workspace/notes/a.txt``: nobody
    else takes that file under another spelling, nor writes it."""
    _, key = tenant
    _, other_key = other_tenant
    sid = create(api_url, key)["id"]
    leases = f"{api_url}/v1/sandboxes/{sid}/leases"
    mine = post(leases, key, {"path": "/workspace/./notes//a.txt", "holder": "a"})
    assert mine.status_code == 201 and mine.json()["path"] == "/workspace/notes/a.txt", mine.text
    for spelling in ("/workspace/notes/a.txt", "/workspace/notes/../notes/a.txt", "//workspace/notes/a.txt"):
        theirs = post(leases, key, {"path": spelling, "holder": "b"})
        assert theirs.status_code == 409 and theirs.json()["error"]["details"]["holder"] == f"tenant:{tenant[0]}/a"
    upload = httpx.put(f"{api_url}/v1/sandboxes/{sid}/files/notes/a.txt", headers=auth(key), content=b"b\n")
    assert upload.status_code == 409, upload.text
    listed = httpx.get(leases, headers=auth(key), timeout=30).json()["items"]
    assert [x["path"] for x in listed] == ["/workspace/notes/a.txt"]
    # another tenant neither sees, takes nor gives up the leases of this sandbox
    assert httpx.get(leases, headers=auth(other_key), timeout=30).status_code == 404
    assert post(leases, other_key, {"path": "/workspace/notes/a.txt"}).status_code == 404
    gone = httpx.delete(leases, headers=auth(other_key), params={"path": "/workspace/notes/a.txt"}, timeout=30)
    assert gone.status_code == 404
    released = httpx.delete(leases, headers=auth(key), params={"path": "/workspace/notes/./a.txt", "holder": "a"})
    assert released.status_code == 204, released.text
    assert httpx.get(leases, headers=auth(key), timeout=30).json()["items"] == []


def test_a_holder_name_that_is_not_one_is_refused(api_url, sandbox_processor, tenant) -> None:
    """``X-Lease-Holder`` names the record's actor (``tenant:<id>/<name>``): a name the lease routes
    would refuse is a 422 on exec and upload too, before anything runs or is written."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    bad = {**auth(key), "X-Lease-Holder": "a/../b c"}
    ran = httpx.post(f"{api_url}/v1/sandboxes/{sid}/exec", headers=bad, json={"command": "touch ran"}, timeout=30)
    assert ran.status_code == 422 and "X-Lease-Holder" in ran.json()["error"]["message"], ran.text
    put = httpx.put(f"{api_url}/v1/sandboxes/{sid}/files/put.txt", headers=bad, content=b"x", timeout=30)
    assert put.status_code == 422, put.text
    listing = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "ls"})
    assert listing.json()["stdout"] == "", listing.text


def test_a_sandbox_holds_a_bounded_number_of_leases(settings, api_url, sandbox_processor, tenant) -> None:
    """Every lease is fingerprinted (and its file kept) around every other actor's command, so their
    number is a cost on each command: past ``MAX_LEASES`` in force, a new one is 429 (the rows are
    put in place directly: a thousand POSTs would only be slower); extending one held still works."""
    tenant_id, key = tenant
    sid = create(api_url, key)["id"]
    rows = [(tenant_id, sid, f"/workspace/f{i}", f"tenant:{tenant_id}/a") for i in range(lease_store.MAX_LEASES)]
    with connect(settings, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO file_leases (tenant_id, sandbox_id, path, holder, acquired_at, expires_at)"
            " VALUES (%s, %s, %s, %s, now(), now() + interval '10 minutes')",
            rows,
        )
    try:
        leases = f"{api_url}/v1/sandboxes/{sid}/leases"
        refused = post(leases, key, {"path": "/workspace/one-more", "holder": "a"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_leases", refused.text
        assert post(leases, key, {"path": "/workspace/f7", "holder": "a"}).status_code == 201
    finally:
        with connect(settings, autocommit=True) as conn:
            conn.execute("DELETE FROM file_leases WHERE sandbox_id = %s", (sid,))
