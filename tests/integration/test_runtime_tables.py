"""With ``write_batch_s`` (the sandbox processor's tables cache durable facts), table writes reach
their changelog in batches: a key written again before its batch went out is
sent once, with its last value, in the order of the last writes (a mark still follows the states
it covers), while the table itself shows each write at once (on the loop's next turn)."""

import asyncio
import json
import threading
import time

from astraforge.kafka import partition_for, read_range
from astraforge.processors.runtime import Lease, Runtime, app_id
from tests.support import wait_until


def test_a_burst_of_writes_sends_each_key_once_with_its_last_value(fresh_settings) -> None:
    runtime = Runtime(fresh_settings, "tables", fresh_settings.commands_topic, write_batch_s=0.05)
    table = runtime.table("cache")

    async def consume(stream) -> None:  # a subscription to the source topic: what gets partitions assigned
        async for _ in stream:
            pass

    runtime.app.agent(runtime.topic, name="tables-source")(consume)
    runtime.start()
    try:
        wait_until(lambda: runtime.owned and runtime.lease.valid(), timeout=90, what="partitions owned")
        partition = partition_for("sb-1", fresh_settings.topic_partitions)
        seen_in_table = []

        def burst() -> None:  # as a processor's command thread writes: a state, the mark, the state again...
            for n in range(1, 6):
                runtime.put(table, partition, "sb-1", {"n": n})
                runtime.put(table, partition, f"@{partition}", n)
            # a state, the mark that covers it, the state again without a mark: the mark still follows it
            runtime.put(table, partition, "sb-2", {"n": 1})
            runtime.put(table, partition, f"@{partition}", 6)
            runtime.put(table, partition, "sb-2", {"n": 2})

        writer = threading.Thread(target=burst)
        writer.start()
        writer.join()
        wait_until(lambda: (table.data.data.get("sb-2") or {}).get("n") == 2, timeout=10, what="the last write")
        seen_in_table.append(table.data.data.get(f"@{partition}"))
        asyncio.run_coroutine_threadsafe(runtime.flush(), runtime.loop).result(30)
    finally:
        runtime.stop()
    changelog = f"{app_id(fresh_settings, 'tables')}-cache-changelog"
    sent = [
        (json.loads(msg.key()), json.loads(msg.value()))
        for msg in read_range(fresh_settings, changelog, partition, 0, None)
    ]
    assert seen_in_table == [6]
    assert sent == [("sb-1", {"n": 5}), ("sb-2", {"n": 2}), (f"@{partition}", 6)], sent


def test_writes_met_by_a_lapsed_lease_are_held_and_sent_when_it_is_renewed(fresh_settings) -> None:
    """A stall past the lease but not past the session timeout: the partitions never moved, so what
    the instance wrote meanwhile is the truth and reaches the changelog once the lease is renewed
    (dropped, it left the changelog behind the marks sent after it)."""
    runtime = Runtime(fresh_settings, "held", fresh_settings.commands_topic, write_batch_s=0.05)
    table = runtime.table("cache")

    async def consume(stream) -> None:
        async for _ in stream:
            pass

    runtime.app.agent(runtime.topic, name="held-source")(consume)
    runtime.start()
    changelog = f"{app_id(fresh_settings, 'held')}-cache-changelog"
    try:
        wait_until(lambda: runtime.owned and runtime.lease.valid(), timeout=90, what="partitions owned")
        partition = partition_for("sb-1", fresh_settings.topic_partitions)
        lapsed = runtime.lease
        runtime.lease = Lease(lapsed.duration_s)  # never proved: as a lease that lapsed in a stall
        runtime.put(table, partition, "sb-1", {"n": 1})
        runtime.put(table, partition, f"@{partition}", 1)
        asyncio.run_coroutine_threadsafe(runtime.flush(), runtime.loop).result(30)
        assert list(read_range(fresh_settings, changelog, partition, 0, None)) == []  # not sent while lapsed
        runtime.lease.renew(time.monotonic(), time.time())  # as an acknowledged heartbeat of the same generation

        def sent() -> list:
            return [
                (json.loads(m.key()), json.loads(m.value()))
                for m in read_range(fresh_settings, changelog, partition, 0, None)
            ]

        wait_until(lambda: len(sent()) == 2, timeout=10, what="the held writes sent")
        assert sent() == [("sb-1", {"n": 1}), (f"@{partition}", 1)]
    finally:
        runtime.stop()
