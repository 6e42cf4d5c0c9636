"""A sandbox's output, snapshots and artifacts are bounded on the host too, not only inside the
sandbox: output streams to disk past 1 MiB and is capped per command, snapshots are capped while
they stream, artifacts can be deleted and expire, and a tenant's artifact bytes have a quota.
(The session's settings cap output at 16 MiB and snapshots at 4 MiB: tests/conftest.py.)"""

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from psycopg import sql

from astraforge.artifacts import make_artifact_store
from astraforge.db import connect
from astraforge.errors import NotFound
from astraforge.keys import create_key
from astraforge.processors.artifact_sweep import GRACE, sweep
from tests.integration.test_sandbox_api import create, post
from tests.support import auth, get_artifact, running_api, wait_until


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def reset_peak_rss() -> float:
    """The RSS now, with the peak (VmHWM) reset to it: a buffer freed before the measurement returns
    its pages to the OS (large allocations are mmap'd), so only the peak shows that it was held."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM:")


def test_huge_output_is_capped_and_never_held_in_memory(api_url, sandbox_processor, settings, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    before = reset_peak_rss()
    results = [
        post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "yes | head -c 100000000"}).json() for _ in range(3)
    ]
    grew = peak_rss_mb() - before
    for result in results:
        assert result["exit_code"] == 0 and result["truncated"] is True, {k: result[k] for k in ("exit_code", "error")}
        rest = get_artifact(api_url, key, result["output_artifact"])
        stored = len(result["stdout"]) + len(rest.content)  # records stop at the chunk that would pass 1 MiB
        assert settings.max_output_bytes - 64 * 1024 <= stored <= settings.max_output_bytes
    # the processor, projector and API run in this process: 300 MB of output went through them (the
    # old in-memory overflow held 99 MB per command, plus a copy for the store, then freed it: only
    # the peak sees that); what they hold now is the records' share
    assert grew < 150, f"the processor's peak memory grew by {grew:.0f} MiB"
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_a_snapshot_past_the_limit_fails_cleanly(api_url, sandbox_processor, settings, tenant) -> None:
    _, key = tenant
    sid = create(api_url, key)["id"]
    post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "head -c 6000000 /dev/urandom > blob"})
    r = post(f"{api_url}/v1/sandboxes/{sid}/snapshots", key)
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("too_large"), r.text
    events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 500}).json()
    assert "snapshot.failed" in [e["type"] for e in events["items"]]
    assert post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": "rm blob"}).json()["exit_code"] == 0
    assert post(f"{api_url}/v1/sandboxes/{sid}/snapshots", key).status_code == 201  # a small one still works
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_file_reads_stream_and_stop_at_the_file_limit(api_url, sandbox_processor, settings, tenant) -> None:
    """A sandbox file is the agent's: as big as its disk, a FIFO, or still growing. Reading one streams
    it through a spool capped at ``max_file_bytes``: past the cap it is a 413 (never a buffer the
    size of the file); under it, it arrives whole; a FIFO is refused without blocking."""
    _, key = tenant
    sid = create(api_url, key)["id"]
    limit = settings.max_file_bytes
    script = f"head -c {limit + 1} /dev/zero > huge; head -c 3000000 /dev/urandom > big; mkfifo pipe; sha256sum big"
    made = post(f"{api_url}/v1/sandboxes/{sid}/exec", key, {"command": script}).json()
    assert made["exit_code"] == 0, made
    before = reset_peak_rss()
    huge = httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/huge", headers=auth(key), timeout=120)
    assert huge.status_code == 413 and "too_large" in huge.json()["error"]["message"], huge.text
    grew = peak_rss_mb() - before
    assert grew < limit / 2**20 / 2, f"reading a {limit}-byte file grew the peak memory by {grew:.0f} MiB"
    big = httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/big", headers=auth(key), timeout=120)
    assert big.status_code == 200 and hashlib.sha256(big.content).hexdigest() == made["stdout"].split()[0]
    pipe = httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/pipe", headers=auth(key), timeout=120)
    assert pipe.status_code == 422 and "not a regular file" in pipe.text, pipe.text
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


@pytest.fixture
def uploaded(api_url, sandbox_processor, tenant):
    name, key = tenant
    sid = create(api_url, key)["id"]
    data = b"z" * (600 * 1024)  # past the inline limit: it travels through the artifact store
    assert httpx.put(f"{api_url}/v1/sandboxes/{sid}/files/big.bin", headers=auth(key), content=data).status_code == 200
    exported = httpx.get(f"{api_url}/v1/sandboxes/{sid}/files/big.bin", headers=auth(key), params={"export": True})
    yield key, sid, {**exported.json(), "tenant": name}
    post(f"{api_url}/v1/sandboxes/{sid}/stop", key)


def test_artifacts_can_be_deleted_only_by_their_tenant(api_url, uploaded, other_tenant, settings, producer) -> None:
    key, sid, artifact = uploaded
    url = f"{api_url}/v1/artifacts/{artifact['artifact_id']}"
    assert httpx.get(url, headers=auth(key)).status_code == 200
    _, other_key = other_tenant
    assert httpx.delete(url, headers=auth(other_key)).status_code == 404
    assert httpx.get(url, headers=auth(key)).status_code == 200
    assert httpx.delete(url, headers=auth(key)).status_code == 202
    wait_until(lambda: httpx.get(url, headers=auth(key)).status_code == 404, timeout=30, what="deletion projected")
    assert httpx.delete(url, headers=auth(key)).status_code == 404

    store = make_artifact_store(settings)
    ref = {"key": f"{artifact['tenant']}/{artifact['sha256']}", "sha256": artifact["sha256"]}
    now = datetime.now(UTC) + GRACE + timedelta(seconds=1)
    sweep(settings, store, producer, now)
    assert store.get(ref), "the upload's own artifact (same bytes, same key) is still live: the bytes stay"

    events = httpx.get(f"{api_url}/v1/streams/{sid}/events", headers=auth(key), params={"limit": 500}).json()
    ids = {e["payload"]["artifact"]["artifact_id"] for e in events["items"] if e["type"] == "artifact.stored"}
    assert artifact["artifact_id"] in ids and len(ids) == 2
    for artifact_id in ids - {artifact["artifact_id"]}:
        assert httpx.delete(f"{api_url}/v1/artifacts/{artifact_id}", headers=auth(key)).status_code == 202
    wait_until(
        lambda: all(httpx.get(f"{api_url}/v1/artifacts/{i}", headers=auth(key)).status_code == 404 for i in ids),
        timeout=30,
        what="both deletions projected",
    )
    sweep(settings, store, producer, datetime.now(UTC))  # every row of the key deleted, but just now
    assert store.get(ref), "deleted, but inside the grace period: a put of the same bytes would revive the key"
    sweep(settings, store, producer, now + GRACE)
    with pytest.raises(NotFound):
        store.get(ref)


def test_retention_expires_old_artifacts(fresh_settings) -> None:
    """On topics and a projection of its own: a sweep 30 days ahead expires everything it sees."""
    from astraforge.producers.kafka import EventProducer
    from astraforge.projections.postgres import Projector
    from astraforge.schemas import Envelope

    store, producer = make_artifact_store(fresh_settings), EventProducer(fresh_settings)
    ref = store.put("t-retention", b"old bytes", name="old.txt")
    producer.append(
        Envelope(
            type="artifact.stored",
            stream_id="s-retention",
            tenant_id="t-retention",
            actor="test",
            payload={"artifact": ref, "command_id": None},
        )
    )
    Projector(fresh_settings).run_until_caught_up()
    assert sweep(fresh_settings, store, producer, datetime.now(UTC)).expired == 0
    later = datetime.now(UTC) + timedelta(days=fresh_settings.artifact_retention_days, minutes=1)
    assert sweep(fresh_settings, store, producer, later).expired == 1
    Projector(fresh_settings).run_until_caught_up()
    with connect(fresh_settings) as conn:
        row = conn.execute(
            sql.SQL("SELECT deleted_at FROM {}.artifacts").format(sql.Identifier(fresh_settings.projection_schema))
        ).fetchone()
    assert row["deleted_at"] is not None
    soon = datetime.now(UTC) + GRACE + timedelta(seconds=1)  # the bytes go once the grace period has passed
    assert sweep(fresh_settings, store, producer, soon).removed_keys == 1
    producer.close()


def test_artifact_bytes_have_a_per_tenant_quota(settings, projector, sandbox_processor) -> None:
    strict = settings.model_copy(update={"quota_artifact_bytes": 1024 * 1024})
    key = create_key(settings, "artifact-quota")
    with running_api(strict) as url:
        sid = create(url, key)["id"]
        files = f"{url}/v1/sandboxes/{sid}/files"
        assert httpx.put(f"{files}/a.bin", headers=auth(key), content=b"a" * 600_000).status_code == 200
        wait_until(
            lambda: httpx.put(f"{files}/b.bin", headers=auth(key), content=b"b" * 600_000).status_code == 429,
            timeout=30,
            what="the first upload counts against the quota",
        )
        refused = httpx.put(f"{files}/c.bin", headers=auth(key), content=b"c" * 600_000).json()["error"]
        assert refused["code"] == "quota_exceeded" and refused["details"]["quota"] == "artifact_bytes"
        assert httpx.put(f"{files}/small.txt", headers=auth(key), content=b"inline").status_code == 200
        post(f"{url}/v1/sandboxes/{sid}/stop", key)
