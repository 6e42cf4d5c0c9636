"""With ``write_batch_s`` (the sandbox processor's tables cache durable facts), table writes reach
their changelog in batches: a key written again before its batch went out is
sent once, with its last value, in the order of the last writes (a mark still follows the states
it covers), while the table itself shows each write at once (on the loop's next turn)."""

import asyncio
import json
import threading

from astraforge.kafka import partition_for, read_range
from astraforge.processors.runtime import Runtime, app_id
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

        writer = threading.Thread(target=burst)
        writer.start()
        writer.join()
        wait_until(lambda: (table.data.data.get("sb-1") or {}).get("n") == 5, timeout=10, what="the last write")
        seen_in_table.append(table.data.data.get(f"@{partition}"))
        asyncio.run_coroutine_threadsafe(runtime.flush(), runtime.loop).result(30)
    finally:
        runtime.stop()
    changelog = f"{app_id(fresh_settings, 'tables')}-cache-changelog"
    sent = [
        (json.loads(msg.key()), json.loads(msg.value()))
        for msg in read_range(fresh_settings, changelog, partition, 0, None)
    ]
    assert seen_in_table == [5]
    assert sent == [("sb-1", {"n": 5}), (f"@{partition}", 5)], sent
