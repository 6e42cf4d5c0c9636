"""Durable accept: a command is a fact (``exec.accepted``) before its offset commits, so a kill -9
after it was consumed and before it started loses nothing: the next owner runs it, once."""

import secrets

import pytest
from psycopg import sql

from astraforge.db import connect
from astraforge.producers.kafka import EventProducer
from tests.scale.cluster import (
    Instance,
    command_ledger,
    count,
    create_restoring,
    provisioned,
    read_kept_file,
    records,
    snapshot_with_kept_file,
    wait_finished,
)
from tests.scale.conftest import PARTITIONS
from tests.support import wait_until


@pytest.mark.timeout(600)
def test_an_accepted_exec_survives_kill_9_before_it_started(deployment) -> None:
    s, api, _, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        snapshot_id = snapshot_with_kept_file(api)
        sid, cid = f"sb-{secrets.token_hex(16)}", f"cmd-{secrets.token_hex(8)}"
        create = create_restoring(api, s.sandbox_image, sid, snapshot_id)
        run = read_kept_file(api, sid, cid)
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
