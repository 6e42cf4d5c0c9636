"""A graceful rebalance in the middle of a provision: the instance that lost the sandbox's partition
must leave the container to the new owner (review finding: its provision thread, on finding the
partition gone, stops the container the new owner has adopted and made ready)."""

import secrets
import threading

import pytest
from psycopg import sql

from astraforge.db import connect
from astraforge.kafka import partition_for
from astraforge.processors.sandboxes import SandboxProcessor
from astraforge.producers.kafka import EventProducer
from tests.scale.cluster import (
    Instance,
    containers,
    count,
    create_restoring,
    partition,
    read_kept_file,
    records,
    snapshot_with_kept_file,
    wait_finished,
)
from tests.scale.conftest import PARTITIONS
from tests.support import wait_until


def one_id_per_partition() -> list[str]:
    ids: dict[int, str] = {}
    while len(ids) < PARTITIONS:
        sid = f"sb-{secrets.token_hex(16)}"
        ids.setdefault(partition_for(sid, PARTITIONS), sid)
    return list(ids.values())


def waiting_on_artifacts(settings) -> int:
    """Lock requests queued on the projection's artifacts table (provisions blocked in their restore)."""
    query = "SELECT count(*) AS n FROM pg_locks WHERE relation = %s::regclass AND NOT granted"
    with connect(settings, autocommit=True) as conn:
        return conn.execute(query, (f'"{settings.projection_schema}".artifacts',)).fetchone()["n"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_provision_in_flight_when_its_partition_moves_keeps_its_container(deployment) -> None:
    s, api, provider, logs = deployment
    a = Instance(s, "proc-a", logs)
    b = None
    try:
        wait_until(lambda: a.owned() == set(range(PARTITIONS)), timeout=90, what="a owns every partition")
        snapshot_id = snapshot_with_kept_file(api)
        ids = one_id_per_partition()
        creates = [create_restoring(api, s.sandbox_image, sid, snapshot_id) for sid in ids]
        with connect(s) as conn:  # every restore's snapshot lookup waits on this lock: provisions hold still
            conn.execute(
                sql.SQL("LOCK TABLE {}.artifacts IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(s.projection_schema))
            )
            EventProducer(s).append_many(creates)
            # each of a's provisions made its container and now waits in its restore
            wait_until(
                lambda: waiting_on_artifacts(s) >= len(ids),
                timeout=120,
                interval=0.5,
                what="a's provisions blocked after creating their containers",
            )
            # a graceful join: some partitions move from a to b mid-provision (b runs in this process:
            # a new process would first wait on this lock in its schema preparation)
            b = SandboxProcessor(s.model_copy(update={"instance_id": "proc-b"}), provider)
            runner = threading.Thread(target=b.run, name="proc-b", daemon=True)
            runner.start()
            wait_until(
                lambda: (
                    b.runtime.owned
                    and a.owned()
                    and not b.runtime.owned & a.owned()
                    and b.runtime.owned | a.owned() == set(range(PARTITIONS))
                ),
                timeout=120,
                what="partitions split between a and b",
            )
            moved = [sid for sid in ids if partition(s, sid) in b.runtime.owned]
            assert moved
            wait_until(
                lambda: waiting_on_artifacts(s) >= len(ids) + len(moved),
                timeout=120,
                interval=0.5,
                what="b re-driving the moved provisions",
            )
            conn.rollback()

        for sid in ids:
            wait_until(
                lambda sid=sid: {"sandbox.ready", "sandbox.failed"} & {e.type for e in records(s, sid)},
                timeout=120,
                interval=0.5,
                what=f"{sid} settled",
            )
        a.stop()  # its provision threads finish before it exits (whatever they were going to do, is done)
        present = containers(provider)
        for sid in moved:
            events = records(s, sid)
            assert not count(events, "sandbox.failed"), (sid, [e.payload for e in events if e.type == "sandbox.failed"])
            assert sid in present, f"{sid}: ready, but its container was removed by the instance that lost it"
            cid = f"cmd-{secrets.token_hex(8)}"
            EventProducer(s).append(read_kept_file(api, sid, cid))
            done = wait_finished(s, sid, cid)
            assert done.payload["exit_code"] == 0, (sid, done.payload)
    finally:
        a.stop()
        if b:
            b.stop()
            runner.join(timeout=60)
