"""A snapshot is data the agent produced: restoring one must not let it plant anything outside
/workspace in the new sandbox. The agent plants an escaping symlink, snapshots, and the restore is
refused before a byte reaches the new sandbox (unit tests cover `..` and absolute entries)."""

import httpx

from tests.integration.test_sandbox_api import create, post
from tests.support import auth


def test_restore_refuses_a_snapshot_with_an_escaping_symlink(api_url, sandbox_processor, tenant) -> None:
    _, key = tenant
    source = create(api_url, key)["id"]
    planted = post(f"{api_url}/v1/sandboxes/{source}/exec", key, {"command": "ln -s /etc/shadow innocent && echo ok"})
    assert planted.json()["stdout"] == "ok\n"
    snapshot = post(f"{api_url}/v1/sandboxes/{source}/snapshots", key).json()

    restored = post(f"{api_url}/v1/sandboxes", key, {"restore_snapshot": snapshot["id"]}).json()
    assert restored["state"] == "failed"
    assert "points outside the workspace" in restored["reason"]
    assert httpx.get(f"{api_url}/v1/sandboxes/{restored['id']}", headers=auth(key)).json()["state"] == "failed"
    assert restored["id"] not in sandbox_processor.provider.list_ids(), "the half-made sandbox was rolled back"
    post(f"{api_url}/v1/sandboxes/{source}/stop", key)
