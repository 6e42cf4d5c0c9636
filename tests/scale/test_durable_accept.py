"""Durable accept: a command is a fact (``exec.accepted``) before its offset commits.

Checked both ways against the real broker. While the events topic refuses writes (its
``max.message.bytes`` below any record's size: the accept cannot become durable), the command is
consumed and its offset stays uncommitted. Once writes pass again, the accept lands and
only then the offset commits; a kill -9 after that, before the command started, loses nothing: the
next owner runs it from its accepted fact alone (no redelivery), once."""

import secrets

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from psycopg import sql

from astraforge.db import connect
from astraforge.kafka import client_config
from astraforge.processors.runtime import app_id
from astraforge.producers.kafka import EventProducer
from astraforge.producers.topics import admin_client
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

REFUSED = "records not acknowledged; retrying"  # the processor's log line while an append cannot land


def refuse_events(settings, refuse: bool) -> None:
    """Make the broker refuse (MESSAGE_TOO_LARGE) every write to the events topic, or stop refusing."""
    op = AlterConfigOpType.SET if refuse else AlterConfigOpType.DELETE  # DELETE: back to the broker's default
    entry = ConfigEntry("max.message.bytes", "64" if refuse else None, incremental_operation=op)
    resource = ConfigResource(ResourceType.TOPIC, settings.events_topic, incremental_configs=[entry])
    admin = admin_client(settings)  # held until the answer came: a collected client cancels its requests
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def committed(settings, partition: int) -> int:
    """The processor group's committed offset of one commands partition (-1001: none yet)."""
    consumer = Consumer(client_config(settings, **{"group.id": app_id(settings, "sandboxes")}))
    try:
        (tp,) = consumer.committed([TopicPartition(settings.commands_topic, partition)], timeout=30)
        return tp.offset
    finally:
        consumer.close()


@pytest.mark.timeout(600)
def test_an_exec_offset_commits_only_after_its_accept_and_survives_kill_9_before_it_started(deployment) -> None:
    s, api, _, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        snapshot_id = snapshot_with_kept_file(api)
        sid, cid = f"sb-{secrets.token_hex(16)}", f"cmd-{secrets.token_hex(8)}"
        producer = EventProducer(s)
        with connect(s) as conn:  # the restore's snapshot lookup waits on this lock: provisioning holds still
            conn.execute(sql.SQL("LOCK TABLE {}.artifacts IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(s.projection_schema)))  # fmt: skip
            producer.append(create_restoring(api, s.sandbox_image, sid, snapshot_id))
            wait_until(lambda: count(records(s, sid), "sandbox.provisioning"), timeout=60, what="provisioning")

            refuse_events(s, True)
            try:
                run = producer.append(read_kept_file(api, sid, cid))  # the commands topic still takes it
                wait_until(lambda: REFUSED in a.log.read_text(), timeout=60, interval=0.2,
                           what="the accept of the consumed command refused by the broker")  # fmt: skip
                assert committed(s, run.partition) <= run.offset, "committed before its accept was a fact"
            finally:
                refuse_events(s, False)
            wait_until(lambda: count(records(s, sid), "exec.accepted", command_id=cid), timeout=60, interval=0.2,
                       what="the exec accepted once writes pass")  # fmt: skip
            wait_until(lambda: committed(s, run.partition) > run.offset, timeout=30, interval=0.2,
                       what="the offset committed after the accept")  # fmt: skip
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
