"""The conversation processor kept no cursor before this release (it trusted faust's committed
offset). A table of that release holds each partition's events mark but no position: the cursor
starts from the group's committed offset there, not from 0 (which answered every chat.post the
commands topic still held a second time)."""

from confluent_kafka import Consumer, Producer, TopicPartition

from astraforge.kafka import client_config
from astraforge.processors.cursor import CommandCursor
from astraforge.processors.runtime import Runtime, app_id
from tests.support import wait_until

PARTITION = 0


def test_a_table_from_before_the_cursor_starts_at_the_groups_commit(fresh_settings) -> None:
    producer = Producer(client_config(fresh_settings))
    for i in range(7):  # what the earlier release handled: offsets 0..6, faust committed 7
        producer.produce(fresh_settings.commands_topic, f"handled {i}".encode(), b"k", partition=PARTITION)
    assert producer.flush(30) == 0
    _commit(fresh_settings, app_id(fresh_settings, "upgrade"), 7)

    runtime = Runtime(fresh_settings, "upgrade", fresh_settings.commands_topic)
    table = runtime.table("conversations")

    async def consume(stream) -> None:
        async for _ in stream:
            pass

    runtime.app.agent(runtime.topic, name="upgrade-source")(consume)
    runtime.start()
    cursor = CommandCursor(runtime, table)
    try:
        wait_until(lambda: PARTITION in runtime.owned and runtime.lease.valid(), timeout=90, what="partition owned")
        assert cursor.load(PARTITION, cursor_added=True) == 0  # no mark: a new deployment starts at 0
        runtime.put(table, PARTITION, f"@{PARTITION}", 42)  # the earlier release's events mark
        wait_until(lambda: table.data.data.get(f"@{PARTITION}") == 42, timeout=10, what="the mark in the table")
        assert cursor.load(PARTITION) == 0  # processors that always kept a cursor never trust faust's commit
        assert cursor.load(PARTITION, cursor_added=True) == 7
        runtime.put(table, PARTITION, CommandCursor.key(PARTITION), 5)  # once it keeps one, its own
        wait_until(lambda: table.data.data.get(CommandCursor.key(PARTITION)) == 5, timeout=10, what="the position")
        assert cursor.load(PARTITION, cursor_added=True) == 5
    finally:
        cursor.close()
        runtime.stop()


def _commit(settings, group: str, offset: int) -> None:
    consumer = Consumer(client_config(settings, **{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(offsets=[TopicPartition(settings.commands_topic, PARTITION, offset)], asynchronous=False)
    finally:
        consumer.close()
