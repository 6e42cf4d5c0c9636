"""Durable accept: a command is a fact (``exec.accepted``) before its offset commits, so a kill -9
after it was consumed and before it started loses nothing: the next owner runs it, once."""

import secrets

import pytest
from psycopg import sql

from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from astraforge.schemas import Envelope
from tests.scale.cluster import Instance, command_ledger, count, provisioned, records, wait_finished
from tests.scale.conftest import PARTITIONS
from tests.support import get_artifact, wait_until


def command(tenant: str, sandbox_id: str, type_: str, payload: dict) -> Envelope:
    return Envelope(type=type_, stream_id=sandbox_id, tenant_id=tenant, actor="test", sandbox_id=sandbox_id,
                    payload=payload)  # fmt: skip


@pytest.mark.timeout(600)
def test_an_accepted_exec_survives_kill_9_before_it_started(deployment) -> None:
    s, api, _, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        source = api.create()["id"]
        assert api.exec(source, "echo kept > /workspace/kept.txt")["exit_code"] == 0
        snapshot = api.post(f"/sandboxes/{source}/snapshots")
        assert snapshot.status_code == 201, snapshot.text
        snapshot_id = snapshot.json()["id"]
        assert get_artifact(api.url, api.key, snapshot_id).status_code == 200  # projected

        sid, cid = f"sb-{secrets.token_hex(16)}", f"cmd-{secrets.token_hex(8)}"
        create = command(api.tenant, sid, "sandbox.create", {
            "image": s.sandbox_image, "profile": {}, "cpus": None, "memory_mb": None, "pids": None,
            "idle_timeout_s": 600, "ttl_s": 600, "egress_allow": [], "restore_snapshot": snapshot_id})  # fmt: skip
        run = command(api.tenant, sid, "sandbox.exec", {"command_id": cid, "argv": [], "shell": "cat kept.txt",
                                                        "cwd": "/workspace", "env": {}, "timeout_s": 60.0,
                                                        "async_": True})  # fmt: skip
        with connect(s) as conn:  # the restore's snapshot lookup waits on this lock: provisioning holds still
            conn.execute(sql.SQL("LOCK TABLE {}.artifacts IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(s.projection_schema)))  # fmt: skip
            EventProducer(s).append_many([create, run])
            wait_until(lambda: count(records(s, sid), "exec.accepted", command_id=cid), timeout=60, interval=0.2,
                       what="the exec accepted while its sandbox provisions")  # fmt: skip
            assert not count(records(s, sid), "exec.started"), "accepted, not started"
            a.kill9()  # the command's offset is committed: only its accepted fact remains
            conn.rollback()

        b = Instance(s, "proc-b", logs)
        done = wait_finished(s, sid, cid)
        assert done.payload["exit_code"] == 0 and done.payload["error"] is None, done.payload
        events = records(s, sid)
        output = b"".join(e.payload["data"] for e in events if e.type == "exec.output")
        assert output == b"kept\n"
        assert dict(command_ledger(events)[cid]) == {"exec.accepted": 1, "exec.started": 1, "exec.finished": 1}
        assert provisioned(events) == 1
    finally:
        a.stop()
        if b:
            b.stop()
