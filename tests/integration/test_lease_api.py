"""File leases through the API as an attacker would take them: one file under several spellings, and a
second tenant reaching for the first one's sandbox."""

import httpx

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
