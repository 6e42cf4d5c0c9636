"""A conversation stores artifacts (offloaded outputs, large uploads) only within the tenant's artifact
quota, the check the artifacts API makes: past it the agent's tool answers a clear error and nothing is
stored, neither in the artifact store's records nor in the sandbox.

The conversation's sandbox backend runs as the conversation processor runs it (its records through
the real Kafka to the sandbox processor over docker), with a quota of 1 MiB."""

from astraforge.artifacts import make_artifact_store
from astraforge.processors.conversations.backend import OUTPUT_DIR, RecordedSandbox
from astraforge.processors.runtime import append_durably
from tests.integration.test_sandbox_api import create, post
from tests.support import get

ACTOR = "conversation:cv-quota"


def test_past_the_artifact_quota_a_conversation_stores_nothing_and_says_so(
    settings, api_url, sandbox_processor, producer, tenant
) -> None:
    tenant_id, key = tenant
    strict = settings.model_copy(update={"quota_artifact_bytes": 1024 * 1024})
    sid = create(api_url, key)["id"]
    backend = RecordedSandbox(
        strict,
        make_artifact_store(strict),
        lambda events: append_durably(producer, events, lambda: False),
        tenant_id,
        sid,
        ACTOR,
        lambda: False,
        offload_bytes=64 * 1024,
    )
    try:
        out = backend.execute("head -c 2000000 /dev/zero | tr '\\0' x")
        uploaded = backend.upload_files([("/workspace/big.bin", b"b" * 1_500_000)])
        small = backend.execute("echo small")
    finally:
        backend.close()
    assert out.output.startswith("[error: quota_exceeded: ") and out.truncated, out.output[:300]
    assert out.exit_code == 0 and "xxxx" in out.output  # the preview still shows what the command printed
    assert [u.error for u in uploaded] == ["quota_exceeded: the tenant's artifact storage is full"]
    assert small.output == "small\n" and small.exit_code == 0  # under the offload size: answered as before

    events = get(f"{api_url}/v1/streams/{sid}/events", key, limit=1000).json()["items"]
    ours = [e for e in events if e["actor"] == ACTOR]
    assert not [e for e in ours if e["type"] in ("artifact.stored", "sandbox.file.write")], ours
    listing = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": f"ls -A {OUTPUT_DIR} /workspace"})
    assert listing.status_code == 200 and "big.bin" not in listing.json()["stdout"], listing.text
    assert "No such file" in listing.json()["stderr"]  # no offloaded output was written into the sandbox
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)
